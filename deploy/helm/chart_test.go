package helm

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ipsec-exporter/ipsec_exporter/examples/kubernetes"
)

const (
	chartDir    = "ipsec-exporter"
	examplesDir = "../../examples/kubernetes/"
	namespace   = "monitoring"
)

// rendered is what `helm template` would print, decoded strictly.
type rendered struct {
	daemonSet      *appsv1.DaemonSet
	service        *corev1.Service
	serviceMonitor *monitoringv1.ServiceMonitor
	podMonitor     *monitoringv1.PodMonitor
	notes          string
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// render renders c with values the way `helm install` does (values
// coalesced with values.yaml and checked against values.schema.json) and
// decodes every manifest with the examples' strict decoder.
func render(t *testing.T, c *chart.Chart, values map[string]any) (rendered, error) {
	t.Helper()
	vals, err := util.ToRenderValues(c, values, common.ReleaseOptions{Name: "ipsec", Namespace: namespace, IsInstall: true}, nil)
	if err != nil {
		return rendered{}, err
	}
	files, err := engine.Render(c, vals)
	if err != nil {
		return rendered{}, err
	}
	var r rendered
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			r.notes = files[name]
			continue
		}
		objs, err := kubernetes.DecodeAll([]byte(files[name]))
		if err != nil {
			return rendered{}, err
		}
		for _, obj := range objs {
			if err := r.add(obj); err != nil {
				return rendered{}, err
			}
		}
	}
	return r, nil
}

func (r *rendered) add(obj runtime.Object) error {
	switch o := obj.(type) {
	case *appsv1.DaemonSet:
		r.daemonSet = o
	case *corev1.Service:
		r.service = o
	case *monitoringv1.ServiceMonitor:
		r.serviceMonitor = o
	case *monitoringv1.PodMonitor:
		r.podMonitor = o
	default:
		return &unexpected{obj}
	}
	return nil
}

type unexpected struct{ obj runtime.Object }

func (u *unexpected) Error() string { return "unexpected object " + reflect.TypeOf(u.obj).String() }

func mustRender(t *testing.T, values map[string]any) rendered {
	t.Helper()
	r, err := render(t, loadChart(t), values)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// example decodes one of examples/kubernetes' manifests.
func example[T runtime.Object](t *testing.T, file string) T {
	t.Helper()
	b, err := os.ReadFile(examplesDir + file)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubernetes.DecodeAll(b)
	if err != nil || len(objs) != 1 {
		t.Fatalf("%s: %v (%d objects)", file, err, len(objs))
	}
	o, ok := objs[0].(T)
	if !ok {
		t.Fatalf("%s holds a %T", file, objs[0])
	}
	return o
}

// TestChartLints runs Helm's own chart linter: nothing above info.
func TestChartLints(t *testing.T) {
	l := lint.RunAll(chartDir, nil, namespace)
	for _, m := range l.Messages {
		if m.Severity > support.InfoSev {
			t.Error(m.Error())
		}
	}
}

// TestDefaultPodIsTheExample: with the default values the chart renders a
// DaemonSet whose pod is field for field the one of
// examples/kubernetes/daemonset.yaml (host network, no hostPID, no API
// token, uid 0 with only BPF, PERFMON and NET_ADMIN, read-only root,
// probes, resources, image), which manifests_test.go checks in detail and
// the lab measures; and the headless Service of service.yaml. Nothing else.
func TestDefaultPodIsTheExample(t *testing.T) {
	r := mustRender(t, nil)
	if r.daemonSet == nil || r.service == nil || r.serviceMonitor != nil || r.podMonitor != nil {
		t.Fatalf("default render: want a DaemonSet and a Service only, got %+v", r)
	}
	want := example[*appsv1.DaemonSet](t, "daemonset.yaml")
	if !reflect.DeepEqual(r.daemonSet.Spec.Template.Spec, want.Spec.Template.Spec) {
		t.Errorf("the chart's pod differs from examples/kubernetes/daemonset.yaml's:\nchart:   %+v\nexample: %+v", r.daemonSet.Spec.Template.Spec, want.Spec.Template.Spec)
	}
	if !reflect.DeepEqual(r.daemonSet.Spec.UpdateStrategy, want.Spec.UpdateStrategy) {
		t.Errorf("updateStrategy %+v, example %+v", r.daemonSet.Spec.UpdateStrategy, want.Spec.UpdateStrategy)
	}
	if r.daemonSet.Namespace != namespace || r.service.Namespace != namespace {
		t.Errorf("objects are not in the release namespace %s", namespace)
	}
	podLabels := labels.Set(r.daemonSet.Spec.Template.Labels)
	if !labels.SelectorFromSet(r.daemonSet.Spec.Selector.MatchLabels).Matches(podLabels) {
		t.Error("the DaemonSet's selector does not match its pods")
	}
	svc, wantSvc := r.service.Spec, example[*corev1.Service](t, "service.yaml").Spec
	if !labels.SelectorFromSet(svc.Selector).Matches(podLabels) {
		t.Error("the Service does not select the DaemonSet's pods")
	}
	if svc.ClusterIP != wantSvc.ClusterIP || !reflect.DeepEqual(svc.Ports, wantSvc.Ports) {
		t.Errorf("Service clusterIP %q ports %+v, example %q %+v", svc.ClusterIP, svc.Ports, wantSvc.ClusterIP, wantSvc.Ports)
	}
	if !strings.Contains(r.notes, "pod-security.kubernetes.io/enforce=privileged") {
		t.Error("NOTES.txt does not say the namespace must allow the privileged Pod Security level")
	}
}

// TestAppVersionIsVERSION: the chart installs the version the repository
// builds, the image the example names.
func TestAppVersionIsVERSION(t *testing.T) {
	version, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	c := loadChart(t)
	if c.Metadata.AppVersion != strings.TrimSpace(string(version)) {
		t.Errorf("Chart.yaml appVersion %q, VERSION %q", c.Metadata.AppVersion, strings.TrimSpace(string(version)))
	}
	r := mustRender(t, nil)
	if got := r.daemonSet.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(got, ":v"+c.Metadata.AppVersion) {
		t.Errorf("default image %s is not tagged v%s", got, c.Metadata.AppVersion)
	}
}

// TestMonitors: each monitor, when enabled, scrapes as the example's does
// (same endpoint: port, interval, timeout, relabelings setting node,
// instance and job="ipsec") and selects the chart's own objects; both at
// once is refused.
func TestMonitors(t *testing.T) {
	r := mustRender(t, map[string]any{"serviceMonitor": map[string]any{"enabled": true}})
	if r.serviceMonitor == nil || r.podMonitor != nil {
		t.Fatalf("serviceMonitor.enabled: %+v", r)
	}
	wantSM := example[*monitoringv1.ServiceMonitor](t, "servicemonitor.yaml")
	if !reflect.DeepEqual(r.serviceMonitor.Spec.Endpoints, wantSM.Spec.Endpoints) {
		t.Errorf("ServiceMonitor endpoints differ from the example's:\n%+v\n%+v", r.serviceMonitor.Spec.Endpoints, wantSM.Spec.Endpoints)
	}
	if !labels.SelectorFromSet(r.serviceMonitor.Spec.Selector.MatchLabels).Matches(labels.Set(r.service.Labels)) {
		t.Error("the ServiceMonitor does not select the chart's Service")
	}

	r = mustRender(t, map[string]any{"podMonitor": map[string]any{"enabled": true}})
	if r.podMonitor == nil || r.serviceMonitor != nil {
		t.Fatalf("podMonitor.enabled: %+v", r)
	}
	wantPM := example[*monitoringv1.PodMonitor](t, "podmonitor.yaml")
	if !reflect.DeepEqual(r.podMonitor.Spec.PodMetricsEndpoints, wantPM.Spec.PodMetricsEndpoints) {
		t.Errorf("PodMonitor endpoints differ from the example's:\n%+v\n%+v", r.podMonitor.Spec.PodMetricsEndpoints, wantPM.Spec.PodMetricsEndpoints)
	}
	if !labels.SelectorFromSet(r.podMonitor.Spec.Selector.MatchLabels).Matches(labels.Set(r.daemonSet.Spec.Template.Labels)) {
		t.Error("the PodMonitor does not select the chart's pods")
	}

	_, err := render(t, loadChart(t), map[string]any{
		"serviceMonitor": map[string]any{"enabled": true}, "podMonitor": map[string]any{"enabled": true},
	})
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("both monitors enabled: %v, want a refusal", err)
	}
}

// TestWebConfig: with a web config Secret the pod mounts it read-only where
// --web.config.file points (docs/deploy.md's layout), the probes stay TCP,
// and the monitor takes the scheme and auth the user gives.
func TestWebConfig(t *testing.T) {
	r := mustRender(t, map[string]any{
		"webConfig": map[string]any{"secretName": "ipsec-exporter-web-config"},
		"serviceMonitor": map[string]any{"enabled": true, "endpointConfig": map[string]any{
			"scheme":    "https",
			"basicAuth": map[string]any{"username": map[string]any{"name": "auth", "key": "user"}, "password": map[string]any{"name": "auth", "key": "password"}},
		}},
	})
	pod := r.daemonSet.Spec.Template.Spec
	c := pod.Containers[0]
	if !slices.Contains(c.Args, "--web.config.file=/etc/ipsec_exporter/web-config.yml") {
		t.Errorf("args %v lack the web config", c.Args)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/ipsec_exporter" || !c.VolumeMounts[0].ReadOnly {
		t.Errorf("volume mounts %+v", c.VolumeMounts)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].Secret == nil || pod.Volumes[0].Secret.SecretName != "ipsec-exporter-web-config" || pod.Volumes[0].Name != c.VolumeMounts[0].Name {
		t.Errorf("volumes %+v", pod.Volumes)
	}
	if c.ReadinessProbe.TCPSocket == nil || c.LivenessProbe.TCPSocket == nil {
		t.Error("probes are not TCP: they would get 401 with basic auth on")
	}
	ep := r.serviceMonitor.Spec.Endpoints[0]
	if ep.Scheme == nil || ep.Scheme.String() != "https" || ep.BasicAuth == nil {
		t.Errorf("endpointConfig not merged into the endpoint: %+v", ep)
	}
}

// TestValuesAreChecked: values.schema.json rejects a misspelled key or a
// wrong type at install time instead of ignoring it.
func TestValuesAreChecked(t *testing.T) {
	for _, values := range []map[string]any{
		{"imag": map[string]any{"tag": "v1"}},
		{"serviceMonitor": map[string]any{"enable": true}},
		{"port": "10871"},
		{"extraArgs": []any{"collector.wire.interfaces=eth0"}},
	} {
		if _, err := render(t, loadChart(t), values); err == nil {
			t.Errorf("values %v accepted", values)
		}
	}
	r := mustRender(t, map[string]any{"extraArgs": []any{"--collector.wire.interfaces=eth0"}, "nodeSelector": map[string]any{"ipsec": "yes"}})
	c := r.daemonSet.Spec.Template.Spec.Containers[0]
	if c.Args[len(c.Args)-1] != "--collector.wire.interfaces=eth0" || r.daemonSet.Spec.Template.Spec.NodeSelector["ipsec"] != "yes" {
		t.Errorf("extraArgs or nodeSelector not applied: %v %v", c.Args, r.daemonSet.Spec.Template.Spec.NodeSelector)
	}
}

// TestStrictDecodingCatchesTemplateTypos makes sure a misspelled field in a
// template fails the render's decoding, so the tests above passing means
// the manifests are what the API types say.
func TestStrictDecodingCatchesTemplateTypos(t *testing.T) {
	for _, c := range []struct{ template, from, to string }{
		{"templates/daemonset.yaml", "readOnlyRootFilesystem:", "readOnlyRootFileSystem:"},
		{"templates/daemonset.yaml", "hostNetwork:", "hostNetwrok:"},
		{"templates/service.yaml", "clusterIP:", "clusterIp:"},
	} {
		ch := loadChart(t)
		changed := false
		for _, f := range ch.Templates {
			if f.Name == c.template && strings.Contains(string(f.Data), c.from) {
				f.Data = []byte(strings.Replace(string(f.Data), c.from, c.to, 1))
				changed = true
			}
		}
		if !changed {
			t.Fatalf("%s has no %q to break", c.template, c.from)
		}
		if _, err := render(t, ch, nil); err == nil {
			t.Errorf("%s with %q misspelled %q rendered and decoded without error", c.template, c.from, c.to)
		}
	}
}
