# peers.awk summarises peers.sh's rounds, lines "ROUND BenchmarkName N
# value unit value unit ...", into the median and range over the rounds of
# every benchmark's every unit. For the separate sub-benchmarks of
# BenchmarkKeyed it adds each peer's ratio to go-limiter's ns/op in the
# same round (go-limiter's time over the peer's: its throughput multiple).
function median(a, n,    i, j, t) {
	for (i = 2; i <= n; i++)
		for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
function summary(key,    n, i, lo, hi) {
	n = split(vals[key], v, " ")
	lo = hi = v[1] + 0
	for (i = 1; i <= n; i++) { v[i] += 0; if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i] }
	return sprintf("%.4g (%.4g–%.4g, %d rounds)", median(v, n), lo, hi, n)
}
function add(name, unit, value,    key) {
	key = name SUBSEP unit
	if (!(key in vals)) { keys[++nk] = key }
	vals[key] = vals[key] " " value
}
{
	round = $1; name = $2; sub(/-[0-9]+$/, "", name)
	for (f = 4; f < NF; f += 2) {
		add(name, $(f+1), $f)
		if ($(f+1) == "ns/op") ns[name, round] = $f
	}
	rounds[round] = 1
}
END {
	for (key in ns) {
		split(key, p, SUBSEP); name = p[1]; round = p[2]
		peer = name; sub(/\/[^\/]*$/, "/go-limiter", peer)
		if (name ~ /^BenchmarkKeyed\// && peer != name && (peer, round) in ns && ns[name, round] > 0)
			add(name, "x-vs-go-limiter", ns[peer, round] / ns[name, round])
	}
	for (k = 1; k <= nk; k++) {
		split(keys[k], p, SUBSEP)
		if (p[2] != "B/op") printf "%-48s %-24s %s\n", p[1], p[2], summary(keys[k])
	}
}
