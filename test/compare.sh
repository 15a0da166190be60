#!/bin/sh
# Runs the side-by-side comparisons of docs/BENCHMARKS.md: a node (cmd/node,
# with its embedded NATS, limits, events and rooms), the minimal gorilla chat
# hub (test/peers/hub) and the bare gorilla echo server (test/peers/echo),
# all on loopback, the same load from cmd/wsload against each in turn,
# alternated over rounds.
#
#   test/compare.sh [echo|fanout|idle|all] [rounds]
#
# Binaries go to ${OUT:-/tmp/rt-compare}; DUR sets the send phase (default
# 8s). The idle comparison starts fresh servers for every round, since a Go
# process keeps the memory of closed connections for a while. Every server
# is stopped on exit.
set -eu
what=${1:-all}
rounds=${2:-5}
out=${OUT:-/tmp/rt-compare}
dur=${DUR:-8s}
cd "$(dirname "$0")/.."
mkdir -p "$out"
go build -o "$out/node" ./cmd/node
go build -o "$out/hub" ./test/peers/hub
go build -o "$out/echo" ./test/peers/echo
go build -o "$out/wsload" ./cmd/wsload

# The open-file limit is raised to the hard limit for the servers too.
ulimit -n "$(ulimit -H -n)" || true
pids=""
stop() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	pids=""
}
trap stop EXIT
trap 'stop; exit 1' INT TERM
start() {
	rm -rf "$out/node-data"
	"$out/node" -listen 127.0.0.1:18090 -ops-listen 127.0.0.1:18093 -nats-listen 127.0.0.1:0 -data-dir "$out/node-data" \
		-limits-preset generous -limits-messages-per-minute 100000000 \
		-limits-bytes-per-minute 100000000000 -limits-connections-per-minute 0 \
		-limits-max-concurrent-connections 0 -max-denials -1 -rooms '*:max_members=0' \
		-log-level warn >>"$out/node.log" 2>&1 &
	pids="$pids $!"
	"$out/hub" -listen 127.0.0.1:18092 >>"$out/hub.log" 2>&1 &
	pids="$pids $!"
	"$out/echo" -listen 127.0.0.1:18091 >>"$out/echo.log" 2>&1 &
	pids="$pids $!"
	for port in 18093 18092 18091; do
		tries=0
		until curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; do
			tries=$((tries + 1))
			[ $tries -lt 100 ] || { echo "server on $port did not start" >&2; exit 1; }
			sleep 0.1
		done
	done
}
# The node serves /metrics on its operations listener.
node='ws://127.0.0.1:18090/ws|http://127.0.0.1:18093/metrics' hub=ws://127.0.0.1:18092/ws echo=ws://127.0.0.1:18091/ws
run() { echo "== $*"; "$out/wsload" -settle 1s -drain 1s "$@"; echo; }
start
case $what in echo | all)
	# Room echo: every connection alone in its own room, 4 messages in flight each.
	run -rounds "$rounds" -compare "node=$node,hub=$hub,echo=$echo" -conns 200 -rooms 200 -window 4 -duration "$dur"
esac
case $what in fanout | all)
	# Fan-out at 100,000 deliveries/s, then at saturation (8 in flight per sender).
	run -rounds "$rounds" -compare "node=$node,hub=$hub" -conns 1000 -rooms 1 -rate 100 -duration "$dur"
	run -rounds "$rounds" -compare "node=$node,hub=$hub" -conns 1000 -rooms 10 -rate 1000 -duration "$dur"
	run -rounds "$rounds" -compare "node=$node,hub=$hub" -conns 1000 -rooms 1 -window 8 -duration "$dur"
	run -rounds "$rounds" -compare "node=$node,hub=$hub" -conns 1000 -rooms 10 -window 8 -duration "$dur"
esac
case $what in idle | all)
	# Idle connections: RSS per connection once 5,000 are open, fresh servers each round.
	round=0
	while [ $round -lt "$rounds" ]; do
		round=$((round + 1))
		stop
		start
		run -rounds 1 -compare "node=$node,echo=$echo,hub=$hub" -conns 5000 -rooms 0 -duration 1s -settle 5s
	done
esac
