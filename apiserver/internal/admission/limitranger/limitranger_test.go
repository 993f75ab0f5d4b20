package limitranger

import (
	"context"
	"strings"
	"testing"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/request"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

type ranges []*corev1.LimitRange

func (r ranges) LimitRanges(context.Context, string) ([]*corev1.LimitRange, error) { return r, nil }

func q(m map[string]string) map[string]*metav1.Quantity {
	if m == nil {
		return nil
	}
	out := map[string]*metav1.Quantity{}
	for k, v := range m {
		out[k] = &metav1.Quantity{String_: v}
	}
	return out
}

type rl = map[string]string

func container(name string, req, lim rl) *corev1.Container {
	return &corev1.Container{Name: name, Image: "agnhost", Resources: &corev1.ResourceRequirements{Requests: q(req), Limits: q(lim)}}
}

func pod(cs ...*corev1.Container) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "web"}, Spec: &corev1.PodSpec{Containers: cs}}
}

func limitRange(items ...*corev1.LimitRangeItem) *corev1.LimitRange {
	return &corev1.LimitRange{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "limits"}, Spec: &corev1.LimitRangeSpec{Limits: items}}
}

func run(t *testing.T, lrs ranges, obj scheme.Object, resource string) error {
	t.Helper()
	p := New()
	p.SetStore(lrs)
	k, _ := scheme.ForResource("", resource)
	a := admission.NewAttributes(admission.Create, k, "", "ns", obj.GetMetadata().GetName(), request.User{}, obj, nil, false)
	if err := p.Admit(context.Background(), a); err != nil {
		return err
	}
	return p.Validate(context.Background(), a)
}

func TestDefaultsAreSetAndRecorded(t *testing.T) {
	lr := limitRange(&corev1.LimitRangeItem{Type: "Container",
		Default:        q(rl{"cpu": "500m", "memory": "256Mi"}),
		DefaultRequest: q(rl{"cpu": "100m"})})
	po := pod(container("app", nil, nil), container("side", rl{"cpu": "50m"}, rl{"memory": "64Mi"}))
	po.Spec.InitContainers = []*corev1.Container{container("init", nil, rl{"cpu": "200m"})}
	if err := run(t, ranges{lr}, po, "pods"); err != nil {
		t.Fatal(err)
	}
	res := func(c *corev1.Container) string {
		var parts []string
		for _, k := range []string{"cpu", "memory"} {
			parts = append(parts, "req."+k+"="+c.Resources.Requests[k].GetString_(), "lim."+k+"="+c.Resources.Limits[k].GetString_())
		}
		return strings.Join(parts, " ")
	}
	// memory's default request is its default limit, as upstream defaults
	// the LimitRange item.
	for c, want := range map[*corev1.Container]string{
		po.Spec.Containers[0]:     "req.cpu=100m lim.cpu=500m req.memory=256Mi lim.memory=256Mi",
		po.Spec.Containers[1]:     "req.cpu=50m lim.cpu=500m req.memory=256Mi lim.memory=64Mi",
		po.Spec.InitContainers[0]: "req.cpu=100m lim.cpu=200m req.memory=256Mi lim.memory=256Mi",
	} {
		if got := res(c); got != want {
			t.Errorf("%s: %s\nwant %s", c.Name, got, want)
		}
	}
	want := "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app; " +
		"memory request for container side; cpu limit for container side; cpu, memory request for init container init; memory limit for init container init"
	if got := po.Metadata.Annotations[Annotation]; got != want {
		t.Errorf("annotation = %q\nwant         %q", got, want)
	}
}

func TestMaxOfAContainerIsItsDefaultLimit(t *testing.T) {
	lr := limitRange(&corev1.LimitRangeItem{Type: "Container", Max: q(rl{"cpu": "1"})})
	po := pod(container("app", nil, nil))
	if err := run(t, ranges{lr}, po, "pods"); err != nil {
		t.Fatal(err)
	}
	if got := po.Spec.Containers[0].Resources.Limits["cpu"].GetString_(); got != "1" {
		t.Errorf("limit = %q, want the max 1", got)
	}
}

func TestLimitMessages(t *testing.T) {
	item := func(typ string, min, max, ratio rl) *corev1.LimitRangeItem {
		return &corev1.LimitRangeItem{Type: typ, Min: q(min), Max: q(max), MaxLimitRequestRatio: q(ratio)}
	}
	claim := func(storage string) *corev1.PersistentVolumeClaim {
		c := &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "data"}, Spec: &corev1.PersistentVolumeClaimSpec{Resources: &corev1.VolumeResourceRequirements{}}}
		if storage != "" {
			c.Spec.Resources.Requests = q(rl{"storage": storage})
		}
		return c
	}
	tests := []struct {
		name string
		item *corev1.LimitRangeItem
		obj  scheme.Object
		want string // "" admits
	}{
		{"container over max", item("Container", nil, rl{"cpu": "1"}, nil), pod(container("app", rl{"cpu": "500m"}, rl{"cpu": "2"})),
			`pods "web" is forbidden: maximum cpu usage per Container is 1, but limit is 2`},
		{"container request over max", item("Container", nil, rl{"memory": "1Gi"}, nil), pod(container("app", rl{"memory": "2Gi"}, rl{"memory": "1Gi"})),
			`pods "web" is forbidden: maximum memory usage per Container is 1Gi, but request is 2Gi`},
		{"container within max", item("Container", nil, rl{"cpu": "1"}, nil), pod(container("app", rl{"cpu": "500m"}, rl{"cpu": "1"})), ""},
		{"container under min", item("Container", rl{"cpu": "100m"}, nil, nil), pod(container("app", rl{"cpu": "50m"}, rl{"cpu": "1"})),
			`pods "web" is forbidden: minimum cpu usage per Container is 100m, but request is 50m`},
		{"ratio", item("Container", nil, nil, rl{"cpu": "2"}), pod(container("app", rl{"cpu": "100m"}, rl{"cpu": "500m"})),
			`pods "web" is forbidden: cpu max limit to request ratio per Container is 2, but provided ratio is 5.000000`},
		{"two containers over two bounds", item("Container", nil, rl{"cpu": "1", "memory": "1Gi"}, nil),
			pod(container("a", nil, rl{"cpu": "2", "memory": "1Gi"}), container("b", nil, rl{"cpu": "1", "memory": "2Gi"})),
			`pods "web" is forbidden: [maximum cpu usage per Container is 1, but limit is 2, maximum memory usage per Container is 1Gi, but limit is 2Gi]`},
		{"pod total over max", item("Pod", nil, rl{"cpu": "1"}, nil), pod(container("a", rl{"cpu": "600m"}, rl{"cpu": "600m"}), container("b", rl{"cpu": "600m"}, rl{"cpu": "600m"})),
			`pods "web" is forbidden: maximum cpu usage per Pod is 1, but limit is 1200m`},
		{"claim over max", item("PersistentVolumeClaim", nil, rl{"storage": "10Gi"}, nil), claim("20Gi"),
			`persistentvolumeclaims "data" is forbidden: maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi`},
		{"claim under min", item("PersistentVolumeClaim", rl{"storage": "1Gi"}, nil, nil), claim("500Mi"),
			`persistentvolumeclaims "data" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi`},
		{"claim without a request", item("PersistentVolumeClaim", rl{"storage": "1Gi"}, nil, nil), claim(""),
			`persistentvolumeclaims "data" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := "pods"
			if _, ok := tt.obj.(*corev1.PersistentVolumeClaim); ok {
				res = "persistentvolumeclaims"
			}
			err := run(t, ranges{limitRange(tt.item)}, tt.obj, res)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("admitted, want %q", tt.want)
			}
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v\nwant Forbidden %q", err, tt.want)
			}
		})
	}
}
