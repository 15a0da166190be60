package kvstore

import (
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// DefaultBucket is the JetStream KV bucket of a Config that leaves Bucket
// empty.
const DefaultBucket = "ratethrottle"

// Mode is how the buckets of one limit kind agree across nodes.
type Mode int

const (
	// Global decides locally and flushes consumption every SyncInterval in
	// one batch per node; the other nodes apply it as debits from a KV
	// watch. Each node spends only an allowance, its demand share of what
	// is left. It is the zero Mode and the cluster default.
	Global Mode = iota
	// Local does not synchronise: each node limits alone.
	Local
	// Strict keeps one exact bucket per key in KV: nodes reserve tokens
	// from it in batches sized to their recent demand, one
	// compare-and-swap per batch, decide locally from their batch, and
	// return what they do not use. The cluster never admits more than one
	// exact bucket would; a token reserved by one node is unavailable to
	// the others until spent or returned (within 100 ms of going idle).
	Strict
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case Global:
		return "global"
	case Local:
		return "local"
	case Strict:
		return "strict"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// FailMode is what a node does with cross-node checks while NATS is
// unreachable.
type FailMode int

const (
	// FailOpenLocal lets each node enforce the full limit alone, from what
	// it knew when NATS went away. It is the zero FailMode.
	FailOpenLocal FailMode = iota
	// FailLocalShare lets each node enforce the limit divided by the live
	// nodes it last saw.
	FailLocalShare
	// FailClosed denies cross-node checks with limiter.ErrUnavailable.
	FailClosed
)

// String returns the fail mode's name.
func (f FailMode) String() string {
	switch f {
	case FailOpenLocal:
		return "open-local"
	case FailLocalShare:
		return "local-share"
	case FailClosed:
		return "closed"
	}
	return fmt.Sprintf("FailMode(%d)", int(f))
}

// KindSlots is the kind under which Config.Modes sets the mode of the
// concurrent-connection counts (the Slots). Only Local and non-Local
// differ: counts are always per-node entries with heartbeats.
const KindSlots limiter.Kind = "slots"

// Config configures a Store. Conn is required; zero fields get defaults.
type Config struct {
	// Conn is the NATS connection. The Store does not close it.
	Conn *nats.Conn
	// Bucket is the JetStream KV bucket. Empty means DefaultBucket.
	Bucket string
	// NodeID names this node. A node restarting under the same ID clears
	// its own stale entries. Empty means a random ID.
	NodeID string
	// DefaultMode is the mode of kinds not in Modes. The zero value is
	// Global.
	DefaultMode Mode
	// Modes sets the mode per limit kind, including KindSlots.
	Modes map[limiter.Kind]Mode
	// SyncInterval is the flush period of Global mode. Zero means 50 ms.
	SyncInterval time.Duration
	// HeartbeatInterval is the period of node heartbeats. Zero means 1 s.
	HeartbeatInterval time.Duration
	// DeadAfter is the number of heartbeat intervals after which a silent
	// node is dead. Zero means 3.
	DeadAfter int
	// FailMode is the behaviour while NATS is unreachable. The zero value
	// is FailOpenLocal.
	FailMode FailMode
	// Replicas is the bucket's replica count. Zero means 1.
	Replicas int
	// Storage is the bucket's storage. The zero value is file storage.
	Storage jetstream.StorageType
	// TTL is the bucket's MaxAge: an entry not written for TTL disappears.
	// It must exceed the refill time of every synchronised bucket. Zero
	// means 15 minutes. Live connection counts are rewritten well within
	// it.
	TTL time.Duration
	// MaxRetries caps the compare-and-swap attempts of a Strict decision.
	// Zero means 16.
	MaxRetries int
	// Timeout bounds each KV operation. Zero means 2 s.
	Timeout time.Duration
	// Now returns the current time for the background goroutines. Nil means
	// time.Now.
	Now func() time.Time
	// SweepInterval is the period of the sweep that drops the state of
	// idle, full buckets. Zero means 30 s; a negative value is refused.
	SweepInterval time.Duration
}

var bucketName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// invalidConfig returns the error for the invalid value of field: a
// *limiter.FieldError that unwraps to ErrInvalidConfig.
func invalidConfig(field string, value any, reason string) error {
	return &limiter.FieldError{Field: field, Value: value, Reason: reason, Err: ErrInvalidConfig}
}

// withDefaults returns cfg with defaults filled in, or a
// *limiter.FieldError naming the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Conn == nil {
		return cfg, invalidConfig("Conn", nil, "is required")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if !bucketName.MatchString(cfg.Bucket) {
		return cfg, invalidConfig("Bucket", cfg.Bucket, "must match "+bucketName.String())
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node-" + randomToken()
	}
	def := func(d *time.Duration, name string, v time.Duration) error {
		if *d < 0 {
			return invalidConfig(name, *d, "must not be negative")
		}
		if *d == 0 {
			*d = v
		}
		return nil
	}
	for _, f := range []struct {
		d    *time.Duration
		name string
		v    time.Duration
	}{
		{&cfg.SyncInterval, "SyncInterval", 50 * time.Millisecond},
		{&cfg.HeartbeatInterval, "HeartbeatInterval", time.Second},
		{&cfg.TTL, "TTL", 15 * time.Minute},
		{&cfg.Timeout, "Timeout", 2 * time.Second},
	} {
		if err := def(f.d, f.name, f.v); err != nil {
			return cfg, err
		}
	}
	switch {
	case cfg.DeadAfter < 0:
		return cfg, invalidConfig("DeadAfter", cfg.DeadAfter, "must not be negative")
	case cfg.Replicas < 0 || cfg.Replicas > 5:
		return cfg, invalidConfig("Replicas", cfg.Replicas, "must be 0 to 5")
	case cfg.MaxRetries < 0:
		return cfg, invalidConfig("MaxRetries", cfg.MaxRetries, "must not be negative")
	case cfg.FailMode < FailOpenLocal || cfg.FailMode > FailClosed:
		return cfg, invalidConfig("FailMode", int(cfg.FailMode), "is not a FailMode")
	case cfg.DefaultMode < Global || cfg.DefaultMode > Strict:
		return cfg, invalidConfig("DefaultMode", int(cfg.DefaultMode), "is not a Mode")
	case cfg.Storage != jetstream.FileStorage && cfg.Storage != jetstream.MemoryStorage:
		return cfg, invalidConfig("Storage", int(cfg.Storage), "is not a jetstream.StorageType")
	case cfg.SweepInterval < 0:
		return cfg, invalidConfig("SweepInterval", cfg.SweepInterval, "must not be negative")
	}
	for k, m := range cfg.Modes {
		if m < Global || m > Strict {
			return cfg, invalidConfig(fmt.Sprintf("Modes[%q]", k), int(m), "is not a Mode")
		}
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = 3
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 16
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 30 * time.Second
	}
	return cfg, nil
}
