package collector

import (
	"github.com/alecthomas/kingpin/v2"

	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
)

// --bpf.pin-path keeps the BPF counters and programs of the verdict and wire
// collectors on bpffs, so that a restarted or upgraded exporter continues
// from the same counters and the programs count while it is down
// (docs/deploy.md, "Restarts and upgrades").
var bpfPinPath = kingpin.Flag("bpf.pin-path",
	"Directory on a BPF filesystem (e.g. /sys/fs/bpf/ipsec_exporter) where the verdict and wire programs' counter maps and links are pinned, so that counters continue across restarts and upgrades and packets are counted while the exporter is down. Empty: nothing is pinned, counters restart at 0 with the process. Remove the directory to drop them.").
	Default("").String()

func init() {
	RegisterFlagCheck("bpf.pin-path", func() error {
		if *bpfPinPath == "" {
			return nil
		}
		return pin.Check(*bpfPinPath)
	})
}

// pinDir is a collector's directory under --bpf.pin-path; the zero Dir
// (nothing pinned) without the flag.
func pinDir(collector string) pin.Dir {
	return pin.Dir(*bpfPinPath).Join(collector)
}
