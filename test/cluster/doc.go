// Package cluster holds the cluster fault suite of RateThrottle: tests that
// start real NATS servers and real nodes (in the test process where that is
// honest, as node processes where a crash must be real) and check that the
// limits hold within the tolerances of docs/ACCURACY.md through rolling
// restarts, NATS server loss, network faults, SIGKILL and hostile input.
//
// The package itself exports Proxy, the fault-injecting TCP proxy the
// tests put between a node and NATS.
//
// The default run (go test ./test/cluster) is the short version that CI
// runs. RATETHROTTLE_LONG=1 runs the long version: longer loads and a
// million distinct client IDs against a cluster store as well.
package cluster
