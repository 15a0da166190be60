package policy

import (
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// RescaleLevel returns the level a bucket holding level tokens of oldBurst
// should hold under newBurst, so that a policy change keeps every bucket
// at its level: the same fraction of the burst. An empty bucket stays
// empty, a full one full, a bucket in debt keeps its debt in proportion; a
// change never tops a bucket up beyond that fraction, so a client cannot
// gain a fresh burst from an operator's edit.
//
// A burst of zero or less is an unlimited bucket: one that becomes limited
// starts full (it held no state), one that becomes unlimited holds
// nothing to keep, and RescaleLevel returns 0.
func RescaleLevel(level float64, oldBurst, newBurst int64) float64 {
	return limiter.RescaleLevel(level, oldBurst, newBurst)
}

// RescaleBucket returns b, shaped by old, rescaled to new at now with
// RescaleLevel. A store applies it to each bucket it holds of a class or a
// limit whose Spec a new policy changes; the bucket's level at now is kept
// and it refills at the new rate from then on.
func RescaleBucket(b limiter.Bucket, old, new limiter.Spec, now time.Time) limiter.Bucket {
	return limiter.RescaleBucket(b, old, new, now)
}
