# peers.awk summarises peers.sh's rounds: lines "round name N ns/op ...".
function median(a, n,    i, j, t) {
	for (i = 2; i <= n; i++)
		for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
{
	round = $1; name = $2; sub(/-[0-9]+$/, "", name)
	ns[name, round] = $4
	for (f = 5; f < NF; f++) {
		if ($(f+1) == "allocs/op") allocs[name] = $f
		if ($(f+1) == "B/key") extra[name] = $f " B/key"
	}
	if (!(name in seen)) { seen[name] = 1; order[++nn] = name }
	if (round > rounds) rounds = round
}
END {
	printf "%-52s %12s %20s %8s %24s\n", "benchmark", "median ns/op", "(min-max)", "allocs", "vs go-limiter (min-max)"
	for (k = 1; k <= nn; k++) {
		name = order[k]; n = 0; m = 0
		peer = name; sub(/\/[^\/]*$/, "/go-limiter", peer)
		for (r = 1; r <= rounds; r++) {
			if ((name, r) in ns) {
				v[++n] = ns[name, r]
				if ((peer, r) in ns && ns[name, r] > 0) q[++m] = ns[peer, r] / ns[name, r]
			}
		}
		if (n == 0) continue
		lo = hi = v[1]
		for (i = 1; i <= n; i++) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i] }
		med = median(v, n)
		ratio = ""
		if (m > 0 && peer != name) {
			rlo = rhi = q[1]
			for (i = 1; i <= m; i++) { if (q[i] < rlo) rlo = q[i]; if (q[i] > rhi) rhi = q[i] }
			ratio = sprintf("%.2fx (%.2f-%.2f)", median(q, m), rlo, rhi)
		}
		printf "%-52s %12.1f %20s %8s %24s %s\n", name, med, sprintf("(%.1f-%.1f)", lo, hi), allocs[name], ratio, extra[name]
	}
}
