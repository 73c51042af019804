// Package kubernetes checks the example manifests in this directory
// against the Kubernetes and prometheus-operator API types (the tests), and
// holds the strict decoder those tests and the Helm chart's tests
// (deploy/helm) share. It is a module of its own so that k8s.io/api stays
// out of the exporter's go.mod.
package kubernetes
