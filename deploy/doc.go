// Package deploy holds the tests of the deployment files beside it: the
// Grafana dashboard, the Prometheus alert rules, the compose file, the
// Kubernetes manifests and the Dockerfile. It is a module of its own so
// that the main module does not depend on Prometheus's parser.
package deploy
