// Command ratethrottle is the operator's tool for a RateThrottle cluster.
// It talks to the cluster over NATS, with the same connection settings as
// the node, so it works from any machine that reaches the NATS servers:
//
//	ratethrottle bans list | add CLIENT [--for 10m] [--reason …] | rm CLIENT
//	ratethrottle events tail [--type …] [--client …] [--since 10m] [--json]
//	ratethrottle events keep [--max-age 24h]
//	ratethrottle policy get | set FILE [--if-match REV]
//	ratethrottle stats [--node ID] [--json]
//	ratethrottle top [--count N | --once]
//
// Every verb takes --help. The exit status is 0 on success, 1 when the
// request failed, 2 for a usage error, 3 when NATS cannot be reached or
// refuses the credentials, 4 when what was asked for does not exist (a
// client that is not banned, a node that does not answer, a missing
// bucket or stream) and 130 when interrupted. See docs/OPERATIONS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// The exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitNotFound    = 4
	exitInterrupted = 130
)

// exitError carries an exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, a...)}
}

func notFound(format string, a ...any) error {
	return &exitError{exitNotFound, fmt.Errorf(format, a...)}
}

func failed(err error) error { return &exitError{exitFailed, err} }

// env is the process environment, replaceable in tests.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// tty reports whether stdout is a terminal: top then redraws in place.
	tty bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, tty: isTerminal(os.Stdout)})
	stop()
	os.Exit(code)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// verb is one command.
type verb struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func verbs() []verb {
	return []verb{
		{"bans", "list, add and lift bans: bans list | add CLIENT | rm CLIENT", runBans},
		{"events", "follow violation and ban events: events tail | keep", runEvents},
		{"policy", "read and replace the cluster's policy: policy get | set FILE [--if-match REV]", runPolicy},
		{"stats", "the statistics every node answers over NATS", runStats},
		{"top", "live view of the clients with most denials and the busiest rooms", runTop},
	}
}

const mainUsage = `Usage: ratethrottle VERB [flags] [args]

The operator's tool for a RateThrottle cluster. It talks to the cluster
over NATS with the node's connection settings (--nats-url, --nats-creds,
--nats-token, --nats-user/--nats-password, --nats-tls-*; or the same
RATETHROTTLE_NATS_* environment variables as the node).

Verbs:
`

func printMainUsage(w io.Writer) {
	fmt.Fprint(w, mainUsage)
	for _, v := range verbs() {
		fmt.Fprintf(w, "  %-7s %s\n", v.name, v.summary)
	}
	fmt.Fprint(w, `
Run "ratethrottle VERB --help" for a verb's flags.

Exit status: 0 success, 1 request failed, 2 usage error, 3 NATS
unreachable or credentials refused, 4 not found (client not banned, node
not answering, bucket or stream missing), 130 interrupted.
`)
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, e env) int {
	err := dispatch(ctx, args, e)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	code := exitFailed
	var xe *exitError
	if errors.As(err, &xe) {
		code = xe.code
	}
	if ctx.Err() != nil && code == exitFailed {
		code, err = exitInterrupted, errors.New("interrupted")
	}
	fmt.Fprintf(e.stderr, "ratethrottle: %v\n", err)
	if code == exitUsage {
		fmt.Fprintln(e.stderr, `Run "ratethrottle --help" or "ratethrottle VERB --help".`)
	}
	return code
}

func dispatch(ctx context.Context, args []string, e env) error {
	if len(args) == 0 {
		printMainUsage(e.stderr)
		return usageErr("no verb given")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		printMainUsage(e.stdout)
		return nil
	}
	for _, v := range verbs() {
		if v.name == args[0] {
			return v.run(ctx, e, args[1:])
		}
	}
	return usageErr("unknown verb %q (want %s)", args[0], verbNames())
}

func verbNames() string {
	var names []string
	for _, v := range verbs() {
		names = append(names, v.name)
	}
	return strings.Join(names, ", ")
}

// newFlags returns a flag set that reports errors instead of exiting and
// prints its usage to e.stdout on --help.
func newFlags(e env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ratethrottle %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and positional arguments in any order ("add CLIENT
// --for 1h" and "add --for 1h CLIENT" alike); "--" ends the flags. On
// --help it prints the usage to stdout and returns flag.ErrHelp.
func parse(fs *flag.FlagSet, e env, args []string) ([]string, error) {
	var pos []string
	for {
		fs.SetOutput(io.Discard)
		err := fs.Parse(args)
		fs.SetOutput(e.stderr)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(e.stdout)
			fs.Usage()
			return nil, flag.ErrHelp
		}
		if err != nil {
			return nil, usageErr("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantArgs checks the number of positional arguments.
func wantArgs(verb string, pos []string, names ...string) error {
	if len(pos) < len(names) {
		return usageErr("%s: missing %s", verb, names[len(pos)])
	}
	if len(pos) > len(names) {
		return usageErr("%s: unexpected argument %q", verb, pos[len(names)])
	}
	return nil
}
