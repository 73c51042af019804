package kubernetes

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"
)

const bpffsPatch = "bpffs/daemonset-patch.yaml"

// TestBPFFSPatch applies bpffs/daemonset-patch.yaml to the DaemonSet as
// kubectl patch does (strategic merge) and checks the result: the base's
// args and everything else kept, the pin path added, on the host's bpffs.
func TestBPFFSPatch(t *testing.T) {
	m := load(t)
	data, err := os.ReadFile(bpffsPatch)
	if err != nil {
		t.Fatal(err)
	}
	// Strict decoding catches a misspelled field in the patch.
	objs, err := DecodeAll(data)
	if err != nil {
		t.Fatalf("%s: %v", bpffsPatch, err)
	}
	if p, ok := objs[0].(*appsv1.DaemonSet); len(objs) != 1 || !ok || p.Name != m.daemonSet.Name || p.Namespace != m.daemonSet.Namespace {
		t.Fatalf("%s: want one patch of DaemonSet %s/%s", bpffsPatch, m.daemonSet.Namespace, m.daemonSet.Name)
	}
	patch, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	base, err := json.Marshal(m.daemonSet)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := strategicpatch.StrategicMergePatch(base, patch, appsv1.DaemonSet{})
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := json.Unmarshal(merged, &ds); err != nil {
		t.Fatal(err)
	}
	pod, basePod := ds.Spec.Template.Spec, m.daemonSet.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("patched: %d containers, want the one of the base", len(pod.Containers))
	}
	c, baseC := pod.Containers[0], basePod.Containers[0]
	for _, a := range baseC.Args {
		if !slices.Contains(c.Args, a) {
			t.Errorf("patched args %q lack the base's %q: the patch's list replaces the base's, keep them in step", c.Args, a)
		}
	}
	if !slices.Contains(c.Args, "--bpf.pin-path=/sys/fs/bpf/ipsec_exporter") {
		t.Errorf("patched args %q: no --bpf.pin-path under /sys/fs/bpf", c.Args)
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(v corev1.VolumeMount) bool {
		return v.Name == "bpffs" && v.MountPath == "/sys/fs/bpf" && !v.ReadOnly
	}) {
		t.Errorf("patched volumeMounts %+v: no writable bpffs at /sys/fs/bpf", c.VolumeMounts)
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
		return v.Name == "bpffs" && v.HostPath != nil && v.HostPath.Path == "/sys/fs/bpf" &&
			v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathDirectory
	}) {
		t.Errorf("patched volumes %+v: no hostPath /sys/fs/bpf of type Directory", pod.Volumes)
	}
	// What the patch does not name stays as it was.
	if c.Image != baseC.Image || !slices.Equal(c.SecurityContext.Capabilities.Add, baseC.SecurityContext.Capabilities.Add) ||
		pod.HostNetwork != basePod.HostNetwork || *c.SecurityContext.ReadOnlyRootFilesystem != *baseC.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("the patch changed more than args, volumes and volumeMounts")
	}
}
