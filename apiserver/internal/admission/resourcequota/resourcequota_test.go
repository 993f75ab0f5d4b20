package resourcequota

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/request"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// store keeps quotas as etcd would: each write moves the resourceVersion,
// and a write at an older one is a Conflict. Reads may be served stale,
// as a watch cache may.
type store struct {
	mu     sync.Mutex
	quotas map[string]*corev1.ResourceQuota
	stale  map[string]*corev1.ResourceQuota // what a lagging cache shows
	rv     int64
	writes atomic.Int32
}

func newStore(qs ...*corev1.ResourceQuota) *store {
	s := &store{quotas: map[string]*corev1.ResourceQuota{}, stale: map[string]*corev1.ResourceQuota{}}
	for _, q := range qs {
		s.rv++
		q.Metadata.ResourceVersion = strconv.FormatInt(s.rv, 10)
		s.quotas[q.Metadata.Name] = q
		s.stale[q.Metadata.Name] = q
	}
	return s
}

func (s *store) Quotas(_ context.Context, _ string, fresh bool) ([]*corev1.ResourceQuota, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.stale
	if fresh {
		src = s.quotas
	}
	var out []*corev1.ResourceQuota
	for _, q := range src {
		out = append(out, q)
	}
	return out, nil
}

func (s *store) UpdateStatus(_ context.Context, q *corev1.ResourceQuota) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.quotas[q.Metadata.Name]
	if cur.Metadata.ResourceVersion != q.Metadata.ResourceVersion {
		return apierrors.NewConflict("resourcequotas", q.Metadata.Name, apierrors.StaleMessage)
	}
	s.rv++
	next := proto.Clone(q).(*corev1.ResourceQuota)
	next.Metadata.ResourceVersion = strconv.FormatInt(s.rv, 10)
	s.quotas[q.Metadata.Name] = next
	s.writes.Add(1)
	return nil
}

func (s *store) used(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	u := s.quotas[name].Status.Used
	for _, k := range []string{"pods", "requests.cpu", "limits.cpu", "services", "services.nodeports", "count/configmaps"} {
		if v, ok := u[k]; ok {
			parts = append(parts, k+"="+v.GetString_())
		}
	}
	return strings.Join(parts, ",")
}

func q(m map[string]string) map[string]*metav1.Quantity {
	out := map[string]*metav1.Quantity{}
	for k, v := range m {
		out[k] = &metav1.Quantity{String_: v}
	}
	return out
}

func rq(name string, hard, used map[string]string, scopes ...string) *corev1.ResourceQuota {
	return &corev1.ResourceQuota{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec:   &corev1.ResourceQuotaSpec{Hard: q(hard), Scopes: scopes},
		Status: &corev1.ResourceQuotaStatus{Hard: q(hard), Used: q(used)}}
}

func pod(name string, req, lim map[string]string) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{
		{Name: "app", Resources: &corev1.ResourceRequirements{Requests: q(req), Limits: q(lim)}}}}}
}

func kind(res string) *scheme.Kind { k, _ := scheme.ForResource("", res); return k }

func validate(p *Plugin, op admission.Operation, res string, obj, old scheme.Object) error {
	a := admission.NewAttributes(op, kind(res), "", "ns", obj.GetMetadata().GetName(), request.User{}, obj, old, false)
	return p.Validate(context.Background(), a)
}

func newPlugin(s Store) *Plugin {
	p := New()
	p.SetStore(s)
	return p
}

func TestRefusalsReadAsUpstreams(t *testing.T) {
	type rl = map[string]string
	tests := []struct {
		name   string
		quotas []*corev1.ResourceQuota
		obj    scheme.Object
		res    string
		want   string // "" admits
		used   string // of quota "q" afterwards
	}{
		{"fits and is charged", []*corev1.ResourceQuota{rq("q", rl{"pods": "2", "requests.cpu": "1"}, rl{"pods": "1", "requests.cpu": "500m"})},
			pod("web", rl{"cpu": "250m"}, nil), "pods", "", "pods=2,requests.cpu=750m"},
		{"one pod too many", []*corev1.ResourceQuota{rq("q", rl{"pods": "5"}, rl{"pods": "5"})},
			pod("web", nil, nil), "pods", `pods "web" is forbidden: exceeded quota: q, requested: pods=1, used: pods=5, limited: pods=5`, "pods=5"},
		{"cpu over", []*corev1.ResourceQuota{rq("q", rl{"pods": "10", "requests.cpu": "1"}, rl{"pods": "1", "requests.cpu": "800m"})},
			pod("web", rl{"cpu": "300m"}, nil), "pods", `exceeded quota: q, requested: requests.cpu=300m, used: requests.cpu=800m, limited: requests.cpu=1`, "pods=1,requests.cpu=800m"},
		{"a tracked resource the pod does not state", []*corev1.ResourceQuota{rq("compute", rl{"limits.cpu": "2"}, rl{"limits.cpu": "0"})},
			pod("web", rl{"cpu": "1"}, nil), "pods", `pods "web" is forbidden: failed quota: compute: must specify limits.cpu for: app`, ""},
		{"status not yet computed", []*corev1.ResourceQuota{rq("q", rl{"pods": "5"}, nil)},
			pod("web", nil, nil), "pods", `status unknown for quota: q, resources: pods`, ""},
		{"a BestEffort quota ignores a Burstable pod", []*corev1.ResourceQuota{rq("q", rl{"pods": "0"}, rl{"pods": "0"}, "BestEffort")},
			pod("web", rl{"cpu": "1"}, nil), "pods", "", "pods=0"},
		{"a BestEffort quota counts a BestEffort pod", []*corev1.ResourceQuota{rq("q", rl{"pods": "0"}, rl{"pods": "0"}, "BestEffort")},
			pod("web", nil, nil), "pods", `exceeded quota: q, requested: pods=1, used: pods=0, limited: pods=0`, "pods=0"},
		{"node ports", []*corev1.ResourceQuota{rq("q", rl{"services": "5", "services.nodeports": "1"}, rl{"services": "0", "services.nodeports": "0"})},
			&corev1.Service{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &corev1.ServiceSpec{Type: "NodePort", Ports: []*corev1.ServicePort{{Port: 80}, {Port: 443}}}},
			"services", `services "web" is forbidden: exceeded quota: q, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1`, "services=0,services.nodeports=0"},
		{"count of configmaps", []*corev1.ResourceQuota{rq("q", rl{"count/configmaps": "1"}, rl{"count/configmaps": "0"})},
			&corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: "cfg"}}, "configmaps", "", "count/configmaps=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(tt.quotas...)
			err := validate(newPlugin(s), admission.Create, tt.res, tt.obj, nil)
			if tt.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tt.want != "" && (err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err = %v\nwant Forbidden %q", err, tt.want)
			}
			if tt.used != "" {
				if got := s.used("q"); got != tt.used {
					t.Errorf("used = %s, want %s", got, tt.used)
				}
			}
		})
	}
}

func TestUpdateChargesOnlyWhatItAdds(t *testing.T) {
	s := newStore(rq("q", map[string]string{"services": "5", "services.loadbalancers": "1"}, map[string]string{"services": "1", "services.loadbalancers": "0"}))
	old := &corev1.Service{Metadata: &metav1.ObjectMeta{Name: "web", ResourceVersion: "7"}, Spec: &corev1.ServiceSpec{Type: "ClusterIP"}}
	lb := proto.Clone(old).(*corev1.Service)
	lb.Spec.Type = "LoadBalancer"
	if err := validate(newPlugin(s), admission.Update, "services", lb, old); err != nil {
		t.Fatal(err)
	}
	if got := s.used("q"); got != "services=1" {
		t.Errorf("used = %s, want the service counted once", got)
	}
	if got := s.quotas["q"].Status.Used["services.loadbalancers"].GetString_(); got != "1" {
		t.Errorf("loadbalancers used = %s, want 1", got)
	}
}

// TestConcurrentCreatesCannotSqueezeUnderTheLimit plays several apiservers
// (one plugin each, so no shared lock) over one store that serves stale
// reads: only the resourceVersion guard stands between them.
func TestConcurrentCreatesCannotSqueezeUnderTheLimit(t *testing.T) {
	s := newStore(rq("q", map[string]string{"pods": "5"}, map[string]string{"pods": "0"}))
	plugins := []*Plugin{newPlugin(s), newPlugin(s), newPlugin(s), newPlugin(s)}
	var ok, exceeded atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			err := validate(plugins[i%len(plugins)], admission.Create, "pods", pod(fmt.Sprintf("p%d", i), nil, nil), nil)
			switch {
			case err == nil:
				ok.Add(1)
			case strings.Contains(err.Error(), "exceeded quota: q"):
				exceeded.Add(1)
			default:
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("unexpected refusal: %v", err)
	}
	if ok.Load() != 5 || exceeded.Load() != 15 {
		t.Errorf("admitted %d, exceeded %d; want exactly 5 and 15", ok.Load(), exceeded.Load())
	}
	if got := s.used("q"); got != "pods=5" {
		t.Errorf("used = %s, want pods=5", got)
	}
}

func TestDryRunChargesNothing(t *testing.T) {
	s := newStore(rq("q", map[string]string{"pods": "5"}, map[string]string{"pods": "0"}))
	a := admission.NewAttributes(admission.Create, kind("pods"), "", "ns", "web", request.User{}, pod("web", nil, nil), nil, true)
	if err := newPlugin(s).Validate(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if s.writes.Load() != 0 {
		t.Errorf("a dry run wrote the quota")
	}
}
