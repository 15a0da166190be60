#!/bin/sh
# peers.sh runs the limiter's peer benchmarks in interleaved rounds and
# prints, per benchmark, the median ns/op (min-max) and each peer's
# throughput ratio against go-limiter: the median of the per-round ratios
# and their spread.
#
#   pkg/limiter/testdata/peers.sh [rounds] [bench regexp] [benchtime]
#
# Each round runs every peer once, one after another, in one process (go
# test's -count repeats a benchmark back to back, which would put each
# peer's rounds together and the machine's changes between peers).
set -eu
rounds=${1:-6}
bench=${2:-Keyed}
benchtime=${3:-1s}
dir=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)/limiter.test
out=$(mktemp)
(cd "$dir" && go test -c -o "$bin" .)
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $rounds rounds, -benchtime $benchtime"
i=1
while [ "$i" -le "$rounds" ]; do
	(cd "$dir" && "$bin" -test.run '^$' -test.bench "$bench" -test.benchmem -test.benchtime "$benchtime") |
		grep '^Benchmark' | sed "s/^/$i /" >>"$out"
	i=$((i + 1))
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -f "$dir/testdata/peers.awk" "$out"
echo "# raw results: $out"
