package collector

import (
	"errors"

	"github.com/alecthomas/kingpin/v2"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// The namespaces the kernel-state collectors (sa, policy, events, xfrm_stat)
// read: the exporter's own, labelled netns="", and every named namespace in
// --collector.netns.dir, labelled with its name. IPsec often lives outside
// the exporter's namespace (a VPN gateway namespace, a pod), and SAs,
// policies and /proc/net/xfrm_stat are all per namespace.

var (
	netnsDir = kingpin.Flag("collector.netns.dir",
		"Directory of named network namespaces to read besides the exporter's own (where `ip netns add` puts them). Empty: only the exporter's own namespace.").
		Default("/var/run/netns").String()
	netnsNames = kingpin.Flag("collector.netns.name",
		"Read only this named namespace from --collector.netns.dir (repeatable). Default: all of them.").
		Strings()
)

// netnsTargets lists the namespaces to read now: they come and go between
// scrapes.
func netnsTargets() ([]netnsx.Target, error) {
	return netnsx.List(*netnsDir, *netnsNames)
}

// netnsTarget is one namespace to read.
type netnsTarget = netnsx.Target

// readInNetns reads a file (e.g. under /proc/net) as the namespace sees it.
func readInNetns(t netnsTarget, path string) ([]byte, error) {
	return netnsx.ReadFile(t, path)
}

// xfrmAbsent tells whether err means the kernel has no XFRM netlink
// (xfrm_user not loaded or not built): no data, not a failure.
func xfrmAbsent(err error) bool {
	return errors.Is(err, unix.EPROTONOSUPPORT)
}
