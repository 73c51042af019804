//go:build !amd64

package bench

// The plugin and the lab are x86-64 only; elsewhere a mark does nothing.
func mark() {}
