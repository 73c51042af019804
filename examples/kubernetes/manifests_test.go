package kubernetes

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// wantCaps are the capabilities the exporter needs (kernels >= 5.11), as
// measured by deploy/caps_lab_test.go. The systemd unit must grant the same
// ones; TestSameCapabilitiesAsSystemd checks that.
var wantCaps = []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN"}

const defaultPort = 10871

// manifests holds every object of every *.yaml file here.
type manifests struct {
	namespace      *corev1.Namespace
	daemonSet      *appsv1.DaemonSet
	service        *corev1.Service
	serviceMonitor *monitoringv1.ServiceMonitor
	podMonitor     *monitoringv1.PodMonitor
	raw            map[string][]byte
}

func load(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := manifests{raw: map[string][]byte{}}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m.raw[f] = data
		objs, err := DecodeAll(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, obj := range objs {
			switch o := obj.(type) {
			case *corev1.Namespace:
				m.namespace = o
			case *appsv1.DaemonSet:
				m.daemonSet = o
			case *corev1.Service:
				m.service = o
			case *monitoringv1.ServiceMonitor:
				m.serviceMonitor = o
			case *monitoringv1.PodMonitor:
				m.podMonitor = o
			default:
				t.Errorf("%s: unexpected %T", f, obj)
			}
		}
	}
	if m.namespace == nil || m.daemonSet == nil || m.service == nil || m.serviceMonitor == nil || m.podMonitor == nil {
		t.Fatalf("missing manifests: %+v", m)
	}
	return m
}

// TestStrictDecodingCatchesTypos makes sure the decoding above would catch
// a misspelled field, so the other tests' passing means something.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	m := load(t)
	for _, c := range []struct{ file, from, to string }{
		{"daemonset.yaml", "readOnlyRootFilesystem:", "readOnlyRootFileSystem:"},
		{"daemonset.yaml", "hostNetwork:", "hostNetwrok:"},
		{"service.yaml", "clusterIP:", "clusterIp:"},
		{"servicemonitor.yaml", "relabelings:", "relabellings:"},
		{"podmonitor.yaml", "sourceLabels:", "sourceLabel:"},
	} {
		file, from, to := c.file, c.from, c.to
		broken := bytes.Replace(m.raw[file], []byte(from), []byte(to), 1)
		if bytes.Equal(broken, m.raw[file]) {
			t.Fatalf("%s has no %q to break", file, from)
		}
		if _, err := DecodeAll(broken); err == nil {
			t.Errorf("%s with %q misspelled %q decoded without error", file, from, to)
		}
	}
}

func TestNamespace(t *testing.T) {
	m := load(t)
	ns := m.namespace.Name
	if m.namespace.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Error("namespace does not allow the privileged Pod Security level (hostNetwork and added capabilities need it)")
	}
	for kind, got := range map[string]string{
		"DaemonSet": m.daemonSet.Namespace, "Service": m.service.Namespace,
		"ServiceMonitor": m.serviceMonitor.Namespace, "PodMonitor": m.podMonitor.Namespace,
	} {
		if got != ns {
			t.Errorf("%s is in namespace %q, want %q", kind, got, ns)
		}
	}
}

func TestDaemonSet(t *testing.T) {
	m := load(t)
	ds := m.daemonSet
	pod := ds.Spec.Template.Spec
	if !labels.SelectorFromSet(ds.Spec.Selector.MatchLabels).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Error("the selector does not match the pod template's labels")
	}
	if !pod.HostNetwork {
		t.Error("hostNetwork must be true: XFRM state and the wire programs live in the host's network namespace")
	}
	if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy = %q, want ClusterFirstWithHostNet with hostNetwork", pod.DNSPolicy)
	}
	if pod.HostPID || pod.HostIPC {
		t.Error("hostPID/hostIPC: not needed (see the comment in daemonset.yaml)")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken must be false: the exporter never uses the API")
	}
	tolerateAll := slices.ContainsFunc(pod.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	})
	if !tolerateAll {
		t.Error("no toleration `operator: Exists`: the exporter would miss tainted nodes")
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("hostPath volume %s: none is needed (docs/deploy.md says why)", v.Name)
		}
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	version, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(c.Image, ":v"+strings.TrimSpace(string(version))) {
		t.Errorf("image %q is not tagged v%s (VERSION)", c.Image, strings.TrimSpace(string(version)))
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("container has no securityContext")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: true is not needed")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Error("capabilities must drop ALL")
	}
	if sc.Capabilities != nil && !sameSet(sc.Capabilities.Add, wantCaps) {
		t.Errorf("capabilities.add = %v, want exactly %v", sc.Capabilities.Add, wantCaps)
	}
	if sc.SeccompProfile == nil {
		t.Error("no seccompProfile")
	}
	// Each added capability has a comment saying why, right above it.
	lines := strings.Split(string(m.raw["daemonset.yaml"]), "\n")
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		for _, capName := range wantCaps {
			if trimmed == "- "+string(capName) && (i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#")) {
				t.Errorf("capability %s has no comment saying why", capName)
			}
		}
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			t.Errorf("no %s request", res)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}
	// The defaults work under the three capabilities (a namespace it may
	// not enter is skipped and counted: deploy/caps_lab_test.go), so the
	// DaemonSet does not override them.
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--collector.netns.") {
			t.Errorf("args override %s: the default works under the DaemonSet's capabilities", a)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != defaultPort {
		t.Errorf("ports = %+v, want one named metrics on %d", c.Ports, defaultPort)
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.TCPSocket == nil || p.TCPSocket.Port.String() != "metrics" {
			t.Errorf("probe %+v does not check the metrics port (TCP, so that it works with TLS and basic auth)", p)
		}
	}
}

func sameSet[T ~string](a, b []T) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestDaemonSetFlags runs the exporter's --help and checks every flag the
// DaemonSet passes exists, so a renamed flag fails here, not on a node.
func TestDaemonSetFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the exporter")
	}
	m := load(t)
	bin := filepath.Join(t.TempDir(), "ipsec_exporter")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the exporter: %v\n%s", err, out)
	}
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, help)
	}
	c := m.daemonSet.Spec.Template.Spec.Containers[0]
	for _, arg := range append(slices.Clone(c.Command), c.Args...) {
		name, _, _ := strings.Cut(arg, "=")
		if !strings.HasPrefix(name, "--") {
			t.Errorf("argument %q is not a --flag=value", arg)
			continue
		}
		if !bytes.Contains(help, []byte(name+"=")) && !bytes.Contains(help, []byte("--[no-]"+name[2:])) {
			t.Errorf("flag %s does not exist (not in --help)", name)
		}
	}
}

func TestService(t *testing.T) {
	m := load(t)
	svc := m.service
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("clusterIP = %q, want None (headless: one endpoint per node)", svc.Spec.ClusterIP)
	}
	podLabels := labels.Set(m.daemonSet.Spec.Template.Labels)
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Error("the Service's selector does not match the DaemonSet's pods")
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" ||
		svc.Spec.Ports[0].Port != defaultPort || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("ports = %+v, want one named metrics, port %d, targetPort metrics", svc.Spec.Ports, defaultPort)
	}
}

// nodeRelabeling reports whether relabelings set the node label from the
// pod's node name.
func nodeRelabeling(rs []monitoringv1.RelabelConfig) bool {
	return slices.ContainsFunc(rs, func(r monitoringv1.RelabelConfig) bool {
		action := strings.ToLower(r.Action)
		return slices.Equal(r.SourceLabels, []monitoringv1.LabelName{"__meta_kubernetes_pod_node_name"}) &&
			r.TargetLabel == "node" && (action == "" || action == "replace") &&
			(r.Replacement == nil || *r.Replacement == "$1")
	})
}

func TestServiceMonitor(t *testing.T) {
	m := load(t)
	sm := m.serviceMonitor
	sel, err := metav1LabelSelector(sm.Spec.Selector.MatchLabels)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(m.service.Labels)) {
		t.Error("the ServiceMonitor's selector does not match the Service's labels")
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("want one endpoint, got %d", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != m.service.Spec.Ports[0].Name {
		t.Errorf("endpoint port %q is not the Service's port %q", ep.Port, m.service.Spec.Ports[0].Name)
	}
	if !nodeRelabeling(ep.RelabelConfigs) {
		t.Error("no relabeling sets node from __meta_kubernetes_pod_node_name")
	}
}

func TestPodMonitor(t *testing.T) {
	m := load(t)
	pm := m.podMonitor
	sel, err := metav1LabelSelector(pm.Spec.Selector.MatchLabels)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(m.daemonSet.Spec.Template.Labels)) {
		t.Error("the PodMonitor's selector does not match the DaemonSet's pods")
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("want one endpoint, got %d", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Port == nil || *ep.Port != m.daemonSet.Spec.Template.Spec.Containers[0].Ports[0].Name {
		t.Errorf("endpoint port %v is not the container's port", ep.Port)
	}
	if !nodeRelabeling(ep.RelabelConfigs) {
		t.Error("no relabeling sets node from __meta_kubernetes_pod_node_name")
	}
}

func metav1LabelSelector(matchLabels map[string]string) (labels.Selector, error) {
	if len(matchLabels) == 0 {
		return nil, errors.New("empty selector: it would match everything")
	}
	return labels.SelectorFromSet(matchLabels), nil
}

// TestSameCapabilitiesAsSystemd keeps the two deployments' claims equal.
func TestSameCapabilitiesAsSystemd(t *testing.T) {
	unit, err := os.ReadFile("../systemd/ipsec_exporter.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"CapabilityBoundingSet=", "AmbientCapabilities="} {
		var got []corev1.Capability
		for _, line := range strings.Split(string(unit), "\n") {
			if v, ok := strings.CutPrefix(line, key); ok {
				for _, f := range strings.Fields(v) {
					got = append(got, corev1.Capability(strings.TrimPrefix(f, "CAP_")))
				}
			}
		}
		if !sameSet(got, wantCaps) {
			t.Errorf("systemd %s%v, DaemonSet adds %v", key, got, wantCaps)
		}
	}
}
