package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

const policyUsage = `policy get [flags]
       ratethrottle policy set FILE [--if-match REV] [flags]

get prints the cluster's policy document as YAML, after a comment line
with its revision, author and time; it exits 4 when the cluster holds
none. set validates FILE ("-": standard input) and stores it as the new
policy, which every node applies within a second: with --if-match only
if REV is still the stored revision (exit 1 naming the revision now
stored otherwise), without it over whatever revision is stored. An
invalid document exits 1 naming each bad path and is never stored. The
policy is in <kv-bucket>_policy.`

func runPolicy(ctx context.Context, e env, args []string) error {
	sub := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	fs := newFlags(e, strings.TrimSpace("policy "+sub), policyUsage)
	var c connFlags
	c.register(fs, e)
	var ifMatch *uint64
	switch sub {
	case "get":
	case "set":
		ifMatch = fs.Uint64("if-match", 0, "store only if this is still the stored revision (0: any)")
	case "":
		if _, err := parse(fs, e, args); err != nil {
			return err
		}
		return usageErr("policy: missing sub-verb (get or set)")
	default:
		return usageErr("policy: unknown sub-verb %q (want get or set)", sub)
	}
	pos, err := parse(fs, e, args)
	if err != nil {
		return err
	}
	var doc *policy.Document
	if sub == "get" {
		err = wantArgs("policy get", pos)
	} else if err = wantArgs("policy set", pos, "FILE"); err == nil {
		doc, err = readPolicy(pos[0])
	}
	if err != nil {
		return err
	}
	nc, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	bucket := c.bucket + "_policy"
	s, err := policy.NewStore(octx, policy.StoreConfig{Conn: nc, Bucket: bucket, EventPrefix: c.prefix, NodeID: cliNode(), Timeout: c.timeout})
	if err != nil {
		return classify(fmt.Sprintf("policy bucket %q", bucket), err)
	}
	if sub == "get" {
		v, err := s.Get(octx)
		if errors.Is(err, policy.ErrNotFound) {
			return notFound("policy get: the cluster holds no policy in %q (the nodes use their own)", bucket)
		}
		if err != nil {
			return classify("policy get", err)
		}
		b, err := policy.Marshal(v.Document)
		if err != nil {
			return failed(err)
		}
		fmt.Fprintf(e.stdout, "# revision %d, changed by %s at %s\n", v.Revision, clean(v.Who), v.At.UTC().Format(time.RFC3339))
		_, err = e.stdout.Write(b)
		return err
	}
	rev := *ifMatch
	if rev == 0 {
		switch cur, err := s.Get(octx); {
		case err == nil:
			rev = cur.Revision
		case errors.Is(err, policy.ErrNotFound):
		default:
			return classify("policy set", err)
		}
	}
	v, err := s.Put(octx, doc, rev, cliNode())
	var stale *policy.StaleError
	switch {
	case errors.As(err, &stale):
		return failed(fmt.Errorf("policy set: revision %d is stale: the stored revision is %d (get it, merge, and set again)", stale.Want, stale.Have))
	case err != nil:
		return classify("policy set", err)
	}
	fmt.Fprintf(e.stdout, "stored revision %d\n", v.Revision)
	return nil
}

// readPolicy reads and validates the document in path ("-": stdin).
func readPolicy(path string) (*policy.Document, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, policy.MaxDocumentSize+1))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, failed(fmt.Errorf("policy set: %w", err))
	}
	doc, err := policy.Parse(data)
	if err != nil {
		return nil, failed(fmt.Errorf("policy set: %s: %w", strconv.Quote(path), err))
	}
	return doc, nil
}
