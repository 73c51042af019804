// Package helm holds no code: it is the module of the test that renders the
// Helm chart in ipsec-exporter/ with Helm's own Go library and decodes the
// result strictly, as examples/kubernetes' test does the manifests. A module
// of its own so that Helm stays out of the exporter's go.mod.
package helm
