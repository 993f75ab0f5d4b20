package volumebinding

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/claimbinding"
	"skiff.dev/proto/scheme"
	"skiff.dev/scheduler/internal/framework"
)

func node(name, zone string) *framework.NodeInfo {
	return framework.NewNodeInfo(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}}})
}

func claim(name, class, size string, mods ...func(*corev1.PersistentVolumeClaim)) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "u-" + name},
		Spec: &corev1.PersistentVolumeClaimSpec{AccessModes: []string{"ReadWriteOnce"}, StorageClassName: &class,
			Resources: &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: size}}}}}
	for _, m := range mods {
		m(c)
	}
	return c
}

func boundTo(pv string) func(*corev1.PersistentVolumeClaim) {
	return func(c *corev1.PersistentVolumeClaim) {
		c.Spec.VolumeName = pv
		c.Metadata.Annotations = map[string]string{annBindCompleted: "yes"}
	}
}

func volume(name, class, size, host string, mods ...func(*corev1.PersistentVolume)) *corev1.PersistentVolume {
	v := &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: name},
		Spec: &corev1.PersistentVolumeSpec{AccessModes: []string{"ReadWriteOnce"}, StorageClassName: class,
			Capacity: map[string]*metav1.Quantity{"storage": {String_: size}}},
		Status: &corev1.PersistentVolumeStatus{Phase: "Available"}}
	if host != "" {
		v.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []*corev1.NodeSelectorTerm{{
			MatchExpressions: []*corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: "In", Values: []string{host}}}}}}}
	}
	for _, m := range mods {
		m(v)
	}
	return v
}

func claimedBy(c string) func(*corev1.PersistentVolume) {
	return func(v *corev1.PersistentVolume) {
		v.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "default", Name: c, Uid: "u-" + c}
		v.Status.Phase = "Bound"
	}
}

func class(name, provisioner, mode string, zones ...string) *storagev1.StorageClass {
	sc := &storagev1.StorageClass{Metadata: &metav1.ObjectMeta{Name: name}, Provisioner: provisioner, VolumeBindingMode: &mode}
	if len(zones) > 0 {
		sc.AllowedTopologies = []*corev1.TopologySelectorTerm{{MatchLabelExpressions: []*corev1.TopologySelectorLabelRequirement{
			{Key: "topology.kubernetes.io/zone", Values: zones}}}}
	}
	return sc
}

func pod(name string, claims ...string) *framework.PodInfo {
	p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: &corev1.PodSpec{}}
	for i, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, &corev1.Volume{Name: fmt.Sprint("v", i), VolumeSource: &corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return framework.NewPodInfo(p)
}

var classes = []scheme.Object{
	class("local-path", "local-path.skiff.dev", "WaitForFirstConsumer"),
	class("static", "kubernetes.io/no-provisioner", "WaitForFirstConsumer"),
	class("zonal", "example.com/zonal", "WaitForFirstConsumer", "z1"),
	class("immediate", "example.com/nfs", "Immediate"),
}

func newPlugin(t *testing.T, objs ...scheme.Object) (*Plugin, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(append(append([]scheme.Object{}, classes...), objs...)...)
	f := informers.NewFactory(cs.Client, informers.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	p := New(cs.Client, f)
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx)
	t.Cleanup(func() { cancel(); f.Shutdown(); cs.Close() })
	if !informers.WaitForCacheSync(ctx, p.Synced()...) {
		t.Fatal("informers did not sync")
	}
	p.PollInterval = 5 * time.Millisecond
	return p, cs
}

// verdicts runs PreFilter and Filter on each node: "" for a fit, else the
// rejection's message.
func verdicts(p *Plugin, pi *framework.PodInfo, nodes ...*framework.NodeInfo) (string, map[string]string, *framework.CycleState) {
	cs := framework.NewCycleState()
	ctx := context.Background()
	if st := p.PreFilter(ctx, cs, pi, nodes); !st.IsSuccess() {
		return st.Message(), nil, cs
	}
	out := map[string]string{}
	for _, n := range nodes {
		out[n.Name()] = p.Filter(ctx, cs, pi, n).Message()
	}
	return "", out, cs
}

func TestFilter(t *testing.T) {
	a, b, c := node("a", "z1"), node("b", "z1"), node("c", "z2")
	cases := []struct {
		name      string
		objs      []scheme.Object
		pod       *framework.PodInfo
		preFilter string
		want      map[string]string
	}{
		{"no claims", nil, pod("p"), "", map[string]string{"a": "", "b": "", "c": ""}},
		{"missing claim", nil, pod("p", "nope"), `persistentvolumeclaim "nope" not found`, nil},
		{"unbound immediate claim", []scheme.Object{claim("data", "immediate", "1Gi")}, pod("p", "data"), ErrUnboundImmediateClaims, nil},
		{"bound claim follows its volume's node affinity",
			[]scheme.Object{claim("data", "local-path", "1Gi", boundTo("pv1")), volume("pv1", "local-path", "1Gi", "b", claimedBy("data"))},
			pod("p", "data"), "", map[string]string{"a": ErrReasonNodeConflict, "b": "", "c": ErrReasonNodeConflict}},
		{"bound claim without affinity fits anywhere",
			[]scheme.Object{claim("data", "", "1Gi", boundTo("pv1")), volume("pv1", "", "1Gi", "", claimedBy("data"))},
			pod("p", "data"), "", map[string]string{"a": "", "b": "", "c": ""}},
		{"bound to a missing volume", []scheme.Object{claim("data", "", "1Gi", boundTo("gone"))},
			pod("p", "data"), "", map[string]string{"a": ErrReasonPVNotExist, "b": ErrReasonPVNotExist, "c": ErrReasonPVNotExist}},
		{"delayed claim, provisioner anywhere", []scheme.Object{claim("data", "local-path", "1Gi")},
			pod("p", "data"), "", map[string]string{"a": "", "b": "", "c": ""}},
		{"delayed claim, provisioner limited by allowedTopologies", []scheme.Object{claim("data", "zonal", "1Gi")},
			pod("p", "data"), "", map[string]string{"a": "", "b": "", "c": ErrReasonBindConflict}},
		{"delayed claim, static volumes only where they are",
			[]scheme.Object{claim("data", "static", "5Gi"), volume("on-a", "static", "10Gi", "a"), volume("small-on-b", "static", "1Gi", "b"),
				volume("taken-on-c", "static", "10Gi", "c", claimedBy("other"))},
			pod("p", "data"), "", map[string]string{"a": "", "b": ErrReasonBindConflict, "c": ErrReasonBindConflict}},
		{"two claims cannot share one volume",
			[]scheme.Object{claim("one", "static", "1Gi"), claim("two", "static", "1Gi"), volume("only", "static", "1Gi", "a")},
			pod("p", "one", "two"), "", map[string]string{"a": ErrReasonBindConflict, "b": ErrReasonBindConflict, "c": ErrReasonBindConflict}},
		{"a claim with a selector is not provisioned",
			[]scheme.Object{claim("data", "local-path", "1Gi", func(c *corev1.PersistentVolumeClaim) {
				c.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"k": "v"}}
			})},
			pod("p", "data"), "", map[string]string{"a": ErrReasonBindConflict, "b": ErrReasonBindConflict, "c": ErrReasonBindConflict}},
		{"claim being deleted", []scheme.Object{claim("data", "local-path", "1Gi", func(c *corev1.PersistentVolumeClaim) {
			c.Metadata.DeletionTimestamp = metav1.Now()
			c.Metadata.Finalizers = []string{"kubernetes.io/pvc-protection"}
		})}, pod("p", "data"), `persistentvolumeclaim "data" is being deleted`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newPlugin(t, tc.objs...)
			pre, got, _ := verdicts(p, tc.pod, a, b, c)
			if pre != tc.preFilter {
				t.Fatalf("PreFilter = %q, want %q", pre, tc.preFilter)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Filter = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPreFilterIsUnresolvable(t *testing.T) {
	p, _ := newPlugin(t, claim("data", "immediate", "1Gi"))
	st := p.PreFilter(context.Background(), framework.NewCycleState(), pod("p", "data"), nil)
	if st.Code != framework.UnschedulableAndUnresolvable {
		t.Errorf("code %v, want UnschedulableAndUnresolvable (preemption cannot bind a claim)", st.Code)
	}
}

// fakeBinder does what the persistentvolume-binder and the provisioner do
// for claim once the scheduler has written its part.
func fakeBinder(t *testing.T, cs *fake.Clientset, claimName, volumeName string, provision bool) {
	ctx := context.Background()
	claims := client.For[*corev1.PersistentVolumeClaim](cs.Client, "default")
	pvs := client.For[*corev1.PersistentVolume](cs.Client, "")
	go func() {
		for range 400 {
			time.Sleep(5 * time.Millisecond)
			c, err := claims.Get(ctx, claimName)
			if err != nil {
				continue
			}
			if provision {
				if c.GetMetadata().GetAnnotations()[annSelectedNode] == "" {
					continue
				}
				v := volume(volumeName, claimbinding.ClaimClass(c), "1Gi", c.Metadata.Annotations[annSelectedNode], claimedBy(claimName))
				if _, err := pvs.Create(ctx, v); err != nil {
					t.Errorf("creating volume: %v", err)
					return
				}
			} else if v, err := pvs.Get(ctx, volumeName); err != nil || v.GetSpec().GetClaimRef() == nil {
				continue
			}
			c.Spec.VolumeName = volumeName
			if c.Metadata.Annotations == nil {
				c.Metadata.Annotations = map[string]string{}
			}
			c.Metadata.Annotations[annBindCompleted] = "yes"
			if _, err := claims.Update(ctx, c); err != nil {
				t.Errorf("binding claim: %v", err)
			}
			return
		}
	}()
}

func TestPreBindProvisions(t *testing.T) {
	p, cs := newPlugin(t, claim("data", "local-path", "1Gi"))
	pi := pod("p", "data")
	_, got, state := verdicts(p, pi, node("a", "z1"))
	if got["a"] != "" {
		t.Fatalf("filter: %v", got)
	}
	ctx := context.Background()
	if st := p.Reserve(ctx, state, pi, "a"); !st.IsSuccess() {
		t.Fatal(st.Message())
	}
	fakeBinder(t, cs, "data", "pvc-u-data", true)
	if st := p.PreBind(ctx, state, pi, "a"); !st.IsSuccess() {
		t.Fatalf("PreBind: %s", st.Message())
	}
	c, _ := client.For[*corev1.PersistentVolumeClaim](cs.Client, "default").Get(ctx, "data")
	if c.GetMetadata().GetAnnotations()[annSelectedNode] != "a" || c.GetSpec().GetVolumeName() != "pvc-u-data" {
		t.Errorf("claim annotations %v volumeName %q, want selected-node a and bound", c.GetMetadata().GetAnnotations(), c.GetSpec().GetVolumeName())
	}
}

func TestPreBindBindsStaticVolume(t *testing.T) {
	p, cs := newPlugin(t, claim("data", "static", "1Gi"), volume("big", "static", "9Gi", "a"), volume("fits", "static", "2Gi", "a"),
		volume("elsewhere", "static", "1Gi", "b"))
	pi := pod("p", "data")
	_, _, state := verdicts(p, pi, node("a", "z1"))
	ctx := context.Background()
	if st := p.Reserve(ctx, state, pi, "a"); !st.IsSuccess() {
		t.Fatal(st.Message())
	}
	fakeBinder(t, cs, "data", "fits", false)
	if st := p.PreBind(ctx, state, pi, "a"); !st.IsSuccess() {
		t.Fatalf("PreBind: %s", st.Message())
	}
	v, _ := client.For[*corev1.PersistentVolume](cs.Client, "").Get(ctx, "fits")
	if v.GetSpec().GetClaimRef().GetUid() != "u-data" || v.GetMetadata().GetAnnotations()[annBoundByController] != "yes" {
		t.Errorf("volume fits: claimRef %v annotations %v, want pre-bound to data by the controller", v.GetSpec().GetClaimRef(), v.GetMetadata().GetAnnotations())
	}
	if c, _ := client.For[*corev1.PersistentVolumeClaim](cs.Client, "default").Get(ctx, "data"); c.GetMetadata().GetAnnotations()[annSelectedNode] != "" {
		t.Error("a claim bound to an existing volume got selected-node: nothing is to be provisioned")
	}
}

func TestPreBindTimesOut(t *testing.T) {
	p, _ := newPlugin(t, claim("data", "local-path", "1Gi"))
	p.BindTimeout = 50 * time.Millisecond
	pi := pod("p", "data")
	_, _, state := verdicts(p, pi, node("a", "z1"))
	ctx := context.Background()
	p.Reserve(ctx, state, pi, "a")
	if st := p.PreBind(ctx, state, pi, "a"); st.IsSuccess() {
		t.Fatal("PreBind succeeded though no one bound the claim")
	}
}

func TestReserveAndUnreserve(t *testing.T) {
	p, _ := newPlugin(t, claim("one", "static", "1Gi"), claim("two", "static", "1Gi"), volume("only", "static", "1Gi", "a"))
	ctx := context.Background()
	first, second := pod("first", "one"), pod("second", "two")
	_, got, s1 := verdicts(p, first, node("a", "z1"))
	if got["a"] != "" {
		t.Fatalf("first pod: %v", got)
	}
	if st := p.Reserve(ctx, s1, first, "a"); !st.IsSuccess() {
		t.Fatal(st.Message())
	}
	if _, got, _ := verdicts(p, second, node("a", "z1")); got["a"] != ErrReasonBindConflict {
		t.Errorf("second pod while the volume is reserved: %q, want %q", got["a"], ErrReasonBindConflict)
	}
	p.Unreserve(ctx, s1, first, "a")
	if _, got, _ := verdicts(p, second, node("a", "z1")); got["a"] != "" {
		t.Errorf("second pod after Unreserve: %q, want a fit", got["a"])
	}
}

func TestNoFactoryLetsEverythingThrough(t *testing.T) {
	p := New(nil, nil)
	cs := framework.NewCycleState()
	if st := p.PreFilter(context.Background(), cs, pod("p", "data"), nil); !st.IsSuccess() {
		t.Fatal(st.Message())
	}
	if st := p.Filter(context.Background(), cs, pod("p", "data"), node("a", "z")); !st.IsSuccess() {
		t.Fatal(st.Message())
	}
}
