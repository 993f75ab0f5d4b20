package servicealloc

import (
	"log/slog"
	"testing"
	"time"

	"skiff.dev/apiserver/internal/registry"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func (e *env) repair() *Repair {
	return &Repair{Store: e.store, Allocator: e.alloc, Events: e.reg, Interval: time.Hour, Logger: slog.New(slog.DiscardHandler)}
}

func (e *env) runRepair(r *Repair) RepairResult {
	e.t.Helper()
	res, err := r.RunOnce(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// events are the Services' events as "name reason count: message".
func (e *env) events() map[string]*corev1.Event {
	e.t.Helper()
	k, _ := scheme.ForResource("", "events")
	l, err := e.reg.List(e.ctx, k, "default", registry.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]*corev1.Event{}
	for _, o := range l.Items {
		ev := o.Msg.(*corev1.Event)
		out[ev.InvolvedObject.Name+" "+ev.Reason] = ev
	}
	return out
}

func TestRepairRemovesLeaksAndRestoresMissingKeys(t *testing.T) {
	e := newEnv(t)
	web := e.mustCreate(svc("web", func(s *corev1.ServiceSpec) { s.Type = "NodePort" }))
	// Keys nobody holds: a Service deleted by a restore, say.
	for _, k := range []string{ipPrefix + "10.96.0.77", portPrefix + "30077"} {
		if _, err := e.store.Create(e.ctx, k, []byte("default/ghost/uid-ghost")); err != nil {
			t.Fatal(err)
		}
	}
	// A key lost: web's IP has none.
	if _, _, err := e.store.Delete(e.ctx, ipPrefix+web.Spec.ClusterIP, 0); err != nil {
		t.Fatal(err)
	}
	// Not an allocation: left alone.
	if _, err := e.store.Create(e.ctx, "ranges/other/thing", []byte("x")); err != nil {
		t.Fatal(err)
	}
	r := e.repair()
	res := e.runRepair(r)
	if res.Leaked != 2 || res.Restored != 1 || res.Duplicates != 0 {
		t.Fatalf("repair: %+v", res)
	}
	keys := e.keys()
	if keys["ranges/other/thing"] != "x" {
		t.Fatalf("a key that is no allocation was touched: %v", keys)
	}
	delete(keys, "ranges/other/thing")
	if !mapsEqual(keys, map[string]string{
		ipPrefix + web.Spec.ClusterIP:                 "web",
		portPrefix + itoa(web.Spec.Ports[0].NodePort): "web",
	}) {
		t.Fatalf("keys after repair: %v", keys)
	}
	if ev := e.events()["web ClusterIPNotAllocated"]; ev == nil || ev.Type != "Warning" ||
		ev.Message != "Cluster IP "+web.Spec.ClusterIP+" is not allocated; repairing" || ev.Source.Component != "ipallocator-repair-controller" {
		t.Fatalf("event: %v", ev)
	}
	// A second round finds nothing to do.
	if res := e.runRepair(r); res != (RepairResult{}) {
		t.Fatalf("second round: %+v", res)
	}
	// And the restored key is a real one: a request for the IP is refused.
	_, err := e.create(svc("thief", func(s *corev1.ServiceSpec) { s.ClusterIP = web.Spec.ClusterIP }))
	if err == nil {
		t.Fatal("the restored IP was handed out again")
	}
}

func itoa(p int32) string { return portKey(p)[len(portPrefix):] }

func TestRepairReportsDoubleAllocationsOnTheLaterService(t *testing.T) {
	e := newEnv(t)
	first := e.mustCreate(svc("first", func(s *corev1.ServiceSpec) { s.Type = "NodePort" }))
	// A restore brings back a Service holding first's IP and node port.
	later := svc("later", func(s *corev1.ServiceSpec) {
		s.Type, s.ClusterIP, s.ClusterIPs = "NodePort", first.Spec.ClusterIP, []string{first.Spec.ClusterIP}
		s.Ports[0].NodePort = first.Spec.Ports[0].NodePort
	})
	later.Metadata.CreationTimestamp = metav1.NewTime(time.Now().Add(time.Hour))
	e.putRaw(later)
	// And one holding the key while created earlier than its holder.
	r := e.repair()
	res := e.runRepair(r)
	if res.Duplicates != 2 || res.Leaked != 0 || res.Restored != 0 {
		t.Fatalf("repair: %+v", res)
	}
	evs := e.events()
	ip, port := evs["later ClusterIPAlreadyAllocated"], evs["later PortAlreadyAllocated"]
	if ip == nil || ip.Message != "Cluster IP "+first.Spec.ClusterIP+" was assigned to multiple services; please recreate service" {
		t.Fatalf("IP event: %v", ip)
	}
	if port == nil || port.Message != "Port "+itoa(first.Spec.Ports[0].NodePort)+" was assigned to multiple services; please recreate service" || port.Source.Component != "portallocator-repair-controller" {
		t.Fatalf("port event: %v", port)
	}
	if evs["first ClusterIPAlreadyAllocated"] != nil {
		t.Fatal("the first holder was reported")
	}
	if e.keys()[ipPrefix+first.Spec.ClusterIP] != "first" {
		t.Fatalf("the key changed hands: %v", e.keys())
	}
	// The same problem next round is the same event, counted.
	e.runRepair(r)
	if n := e.events()["later ClusterIPAlreadyAllocated"].Count; n != 2 {
		t.Fatalf("count after two rounds = %d", n)
	}
}

func TestRepairGivesTheKeyToTheEarliestHolder(t *testing.T) {
	e := newEnv(t)
	a := svc("a", func(s *corev1.ServiceSpec) { s.ClusterIP, s.ClusterIPs = "10.96.5.5", []string{"10.96.5.5"} })
	a.Metadata.CreationTimestamp = metav1.NewTime(time.Unix(1000, 0))
	b := svc("b", func(s *corev1.ServiceSpec) { s.ClusterIP, s.ClusterIPs = "10.96.5.5", []string{"10.96.5.5"} })
	b.Metadata.CreationTimestamp = metav1.NewTime(time.Unix(2000, 0))
	e.putRaw(b)
	e.putRaw(a)
	// The key names b, restored from a later backup than a.
	if _, err := e.store.Create(e.ctx, ipPrefix+"10.96.5.5", []byte("default/b/uid-b")); err != nil {
		t.Fatal(err)
	}
	res := e.runRepair(e.repair())
	if res.Duplicates != 1 || res.Restored != 1 {
		t.Fatalf("repair: %+v", res)
	}
	if e.keys()[ipPrefix+"10.96.5.5"] != "a" || e.events()["b ClusterIPAlreadyAllocated"] == nil {
		t.Fatalf("keys %v, events %v", e.keys(), e.events())
	}
}

func TestRepairReportsValuesOutsideTheRanges(t *testing.T) {
	e := newEnv(t, withPorts("30000-30100"))
	old := svc("old", func(s *corev1.ServiceSpec) {
		s.Type, s.ClusterIP, s.ClusterIPs = "NodePort", "10.200.0.5", []string{"10.200.0.5"}
		s.Ports[0].NodePort = 31000
	})
	e.putRaw(old)
	res := e.runRepair(e.repair())
	if res.OutOfRange != 2 || res.Restored != 0 {
		t.Fatalf("repair: %+v", res)
	}
	evs := e.events()
	if ev := evs["old ClusterIPOutOfRange"]; ev == nil || ev.Message != "Cluster IP 10.200.0.5 is not within the service CIDR 10.96.0.0/12; please recreate service" {
		t.Fatalf("IP event: %v", ev)
	}
	if ev := evs["old PortOutOfRange"]; ev == nil || ev.Message != "Port 31000 is not within the port range 30000-30100; please recreate service" {
		t.Fatalf("port event: %v", ev)
	}
	// Nothing is written for a value the ranges cannot give.
	e.wantKeys(map[string]string{})
	// Its owner may still update it: a node port stored before the range
	// changed stays valid.
	cur, _ := e.reg.Get(e.ctx, svcKind, "default", "old", "")
	o := cur.Msg.(*corev1.Service)
	o.Metadata.Labels = map[string]string{"touched": "yes"}
	if _, err := e.update(o); err != nil {
		t.Fatalf("update of a Service with an out-of-range node port: %v", err)
	}
}

func TestRepairGuardsItsWrites(t *testing.T) {
	e := newEnv(t)
	web := e.mustCreate(svc("web"))
	if _, _, err := e.store.Delete(e.ctx, ipPrefix+web.Spec.ClusterIP, 0); err != nil {
		t.Fatal(err)
	}
	// A leak the repair read, taken by a new Service before it deletes it.
	if _, err := e.store.Create(e.ctx, ipPrefix+"10.96.0.77", []byte("default/ghost/uid-ghost")); err != nil {
		t.Fatal(err)
	}
	// The Service goes between the repair's reads and its writes: the
	// restored key must not outlive it, nor may the leak's new owner lose it.
	r := e.repair()
	r.afterRead = func() {
		e.delete("web")
		if _, _, err := e.store.Delete(e.ctx, ipPrefix+"10.96.0.77", 0); err != nil {
			t.Fatal(err)
		}
		e.mustCreate(svc("new", func(s *corev1.ServiceSpec) { s.ClusterIP = "10.96.0.77" }))
	}
	res := e.runRepair(r)
	if res.Restored != 0 || res.Leaked != 0 {
		t.Fatalf("repair wrote over what changed meanwhile: %+v", res)
	}
	e.wantKeys(map[string]string{ipPrefix + "10.96.0.77": "new"})
}
