// Package kubernetes holds no code: it is the module of the test that
// checks the example manifests in this directory against the Kubernetes and
// prometheus-operator API types. It is a module of its own so that
// k8s.io/api stays out of the exporter's go.mod.
package kubernetes
