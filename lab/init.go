package lab

import (
	"fmt"
	"strings"
)

// InitScript is the VM's /init: mount the usual file systems, load the lab
// modules, then run body with fd 3 on the results port (the Arch's
// ResultsDevice) and power off.
// Lines starting with Marker on fd 3 are for the host runner.
func InitScript(k *Kernel, body string) string {
	return fmt.Sprintf(`#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for m in $(cat /lab/port-modules.list); do insmod "$m"; done
stty -F %[6]s raw -echo
exec 3>%[6]s
echo "%[1]sinit $(uname -r)" >&3
for m in $(cat /lab/modules.list); do
	insmod "$m" >/dev/null 2>&1 || echo "%[1]smodfail $m" >&3
done
ip link set lo up
export IPSEC_LAB=1 IPSEC_LAB_KERNEL=%[2]s IPSEC_EXPORTER_BIN=%[3]s IPSEC_LAB_IP=%[4]s
echo "%[1]sready $(cut -d' ' -f1 /proc/uptime)" >&3
%[5]s
echo "%[1]sdone" >&3
sync
poweroff -f
`, Marker, k.Spec.Name, VMExporter, VMIP, body, k.Arch.ResultsDevice)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
