package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

const bansUsage = `bans list [flags]
       ratethrottle bans add CLIENT [--for 10m] [--reason TEXT] [flags]
       ratethrottle bans rm CLIENT [flags]

list prints the bans in force; add bans CLIENT on every node (for --for,
or until lifted when --for is 0 or longer than 100 years) and closes its
open connections; rm lifts CLIENT's ban, exiting 4 if it has none. A
CLIENT that is an IP address names the client the nodes see at it: an
IPv6 address its --ipv6-prefix network (set it to the nodes' ipv6_prefix),
an IPv4-mapped address the IPv4 address. A CLIENT that starts with "-"
follows "--".`

func runBans(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs := newFlags(e, "bans", bansUsage)
		var c connFlags
		c.register(fs, e)
		if _, err := parse(fs, e, args); err != nil {
			return err
		}
		return usageErr("bans: missing sub-verb (list, add or rm)")
	}
	sub, args := args[0], args[1:]
	fs := newFlags(e, "bans "+sub, bansUsage)
	var c connFlags
	c.register(fs, e)
	asJSON := fs.Bool("json", false, "print JSON")
	ipv6Prefix := fs.Int("ipv6-prefix", wshandler.DefaultIPv6PrefixLen,
		"the nodes' ipv6_prefix: an IPv6 CLIENT names its network of this many bits (128: the address)")
	var forDur *time.Duration
	var reason *string
	switch sub {
	case "list", "rm":
	case "add":
		forDur = fs.Duration("for", 0, "how long the ban lasts; 0 means until lifted")
		reason = fs.String("reason", "", "why the client is banned, recorded with the ban and in its event")
	default:
		return usageErr("bans: unknown sub-verb %q (want list, add or rm)", sub)
	}
	pos, err := parse(fs, e, args)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		err = wantArgs("bans list", pos)
	default:
		err = wantArgs("bans "+sub, pos, "CLIENT")
	}
	if err != nil {
		return err
	}
	if sub != "list" && pos[0] == "" {
		return usageErr("bans %s: CLIENT is empty", sub)
	}
	if sub != "list" {
		if *ipv6Prefix < 1 || *ipv6Prefix > 128 {
			return usageErr("bans %s: --ipv6-prefix %d: must be 1 to 128", sub, *ipv6Prefix)
		}
		// An address names the client the nodes see at it.
		pos[0] = wshandler.BanKey(pos[0], *ipv6Prefix)
	}
	if forDur != nil && *forDur < 0 {
		return usageErr("bans add: --for %v: must not be negative", *forDur)
	}
	b, closeAll, err := openBans(ctx, &c)
	if err != nil {
		return err
	}
	defer closeAll()
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	switch sub {
	case "list":
		return printBans(e, b.List(), *asJSON)
	case "add":
		if err := b.Ban(rctx, pos[0], *forDur, *reason); err != nil {
			return classify("ban", err)
		}
		until, _ := b.BannedUntil(pos[0], time.Now())
		if *asJSON {
			for _, ban := range b.List() {
				if ban.Client == pos[0] {
					return printJSON(e, ban)
				}
			}
			return failed(fmt.Errorf("ban of %s not in force after it was set", clean(pos[0])))
		}
		if until.IsZero() {
			fmt.Fprintf(e.stdout, "banned %s until lifted\n", clean(pos[0]))
		} else {
			fmt.Fprintf(e.stdout, "banned %s until %s\n", clean(pos[0]), until.UTC().Format(time.RFC3339))
		}
		return nil
	default: // rm
		if _, banned := b.BannedUntil(pos[0], time.Now()); !banned {
			return notFound("bans rm: %s is not banned", clean(pos[0]))
		}
		if err := b.Unban(rctx, pos[0]); err != nil {
			return classify("unban", err)
		}
		if *asJSON {
			return printJSON(e, map[string]any{"client": pos[0], "lifted": true})
		}
		fmt.Fprintf(e.stdout, "lifted the ban of %s\n", clean(pos[0]))
		return nil
	}
}

// openBans connects and opens the nodes' ban bucket, which must exist.
func openBans(ctx context.Context, c *connFlags) (*events.Bans, func(), error) {
	nc, err := c.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	bucket := c.bucket + "_bans"
	b, err := events.NewBans(octx, events.BansConfig{Conn: nc, Bucket: bucket, Prefix: c.prefix, NodeID: cliNode(), UseExisting: true})
	if err != nil {
		nc.Close()
		return nil, nil, classify(fmt.Sprintf("ban bucket %q (has a node started with --kv-bucket %s?)", bucket, c.bucket), err)
	}
	return b, func() { _ = b.Close(); _ = nc.Drain() }, nil
}

// cliNode names the tool in the bans and events it writes.
func cliNode() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "unknown"
	}
	return "cli@" + h
}

func printBans(e env, bans []events.Ban, asJSON bool) error {
	slices.SortFunc(bans, func(a, b events.Ban) int { return a.Since.Compare(b.Since) })
	if asJSON {
		if bans == nil {
			bans = []events.Ban{}
		}
		return printJSON(e, bans)
	}
	if len(bans) == 0 {
		fmt.Fprintln(e.stdout, "no bans in force")
		return nil
	}
	var t table
	t.add("CLIENT", "UNTIL", "LEFT", "BY", "REASON")
	now := time.Now()
	for _, b := range bans {
		until, left := "-", "until lifted"
		if !b.Until.IsZero() {
			until, left = b.Until.UTC().Format(time.RFC3339), human(b.Until.Sub(now))
		}
		by := clean(b.Node)
		if b.Auto {
			by += " (auto)"
		}
		t.add(clean(b.Client), until, left, by, clean(b.Reason))
	}
	fmt.Fprint(e.stdout, t.String())
	return nil
}

func printJSON(e env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
