package e2e

import (
	"fmt"

	"github.com/ipsec-exporter/ipsec_exporter/lab"
)

// initScript is the VM's /init for the end-to-end run, the same steps as the
// lab runner's (mount, load the lab modules, set the lab environment, run
// body with fd 3 on the results port, power off). The runner's own is not
// exported; this copy goes once it is.
func initScript(k *lab.Kernel, body string) string {
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
stty -F /dev/ttyS1 raw -echo
exec 3>/dev/ttyS1
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
`, lab.Marker, k.Spec.Name, lab.VMExporter, lab.VMIP, body)
}
