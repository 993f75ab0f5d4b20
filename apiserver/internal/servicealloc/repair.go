package servicealloc

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/storage"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Repair is upstream's repair controllers for cluster IPs and node ports,
// on the allocation keys: it reads every Service and every key at one etcd
// revision, and
//   - deletes keys no Service holds (leaks: only a restore or a hand edit
//     makes one, since keys are written with their Services);
//   - writes the missing key of a Service's IP or port;
//   - reports values two Services hold (ClusterIPAlreadyAllocated,
//     PortAlreadyAllocated, on every Service but the one created first,
//     which keeps the key) and values outside the current ranges
//     (ClusterIPOutOfRange, PortOutOfRange) as Warning events.
//
// Each write is a transaction guarded by the revisions it read, so two
// apiservers repairing at once cannot undo each other's or a client's work:
// a guard that fails leaves the value to the next round.
type Repair struct {
	Store     *storage.Store
	Allocator *Allocator
	// Events receives the Warning events (the registry: Create, Get, Update).
	Events   *registry.Registry
	Interval time.Duration
	Logger   *slog.Logger
	Now      func() time.Time

	// afterRead runs between a round's reads and its writes (tests).
	afterRead func()
}

// RepairResult counts what one round found.
type RepairResult struct {
	Leaked, Restored, Duplicates, OutOfRange, Invalid int
}

// Start repairs at once, then every Interval, until ctx ends; a failed
// round is logged and the next one tries again.
func (r *Repair) Start(ctx context.Context) error {
	for {
		if res, err := r.RunOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.log().Error("service allocation repair failed", "err", err)
		} else if res != (RepairResult{}) {
			r.log().Info("service allocations repaired", "leaked", res.Leaked, "restored", res.Restored,
				"duplicates", res.Duplicates, "outOfRange", res.OutOfRange, "invalid", res.Invalid)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.Interval):
		}
	}
}

func (r *Repair) log() *slog.Logger {
	if r.Logger == nil {
		return slog.Default()
	}
	return r.Logger
}

// holder is a Service holding a value, as read.
type holder struct {
	svc *corev1.Service
	key string // the Service's own key
	rev int64
}

func (h holder) owner() []byte { return owner(h.svc) }

// kind is what a repair reports about: cluster IPs or node ports.
type kind struct {
	component                               string
	notValid, notAllocated, dup, outOfRange string
	what                                    func(key string) string
}

var (
	ipKind = kind{
		component: "ipallocator-repair-controller", notValid: "ClusterIPNotValid", notAllocated: "ClusterIPNotAllocated",
		dup: "ClusterIPAlreadyAllocated", outOfRange: "ClusterIPOutOfRange",
		what: func(k string) string { return "Cluster IP " + k[len(ipPrefix):] },
	}
	portKind = kind{
		component: "portallocator-repair-controller", notAllocated: "PortNotAllocated",
		dup: "PortAlreadyAllocated", outOfRange: "PortOutOfRange",
		what: func(k string) string { return "Port " + k[len(portPrefix):] },
	}
)

func kindOf(key string) kind {
	if _, ok := parseIPKey(key); ok {
		return ipKind
	}
	return portKind
}

// RunOnce is one round.
func (r *Repair) RunOnce(ctx context.Context) (RepairResult, error) {
	var res RepairResult
	svcs, rev, err := listAll(ctx, r.Store, "services/", 0)
	if err != nil {
		return res, fmt.Errorf("list services: %w", err)
	}
	keys, _, err := listAll(ctx, r.Store, RangesPrefix, rev)
	if err != nil {
		return res, fmt.Errorf("list allocations: %w", err)
	}
	stored := map[string]storage.KV{}
	for _, kv := range keys {
		stored[kv.Key] = kv
	}
	holders := map[string][]holder{}
	inRange := map[string]bool{}
	for _, kv := range svcs {
		svc := &corev1.Service{}
		if err := proto.Unmarshal(kv.Value, svc); err != nil {
			r.log().Error("service allocation repair: undecodable service", "key", kv.Key, "err", err)
			continue
		}
		h := holder{svc: svc, key: kv.Key, rev: kv.Rev}
		for _, k := range r.valuesOf(ctx, h, &res) {
			holders[k.key] = append(holders[k.key], h)
			if k.inRange {
				inRange[k.key] = true
			}
		}
	}
	if r.afterRead != nil {
		r.afterRead()
	}
	for key, hs := range holders {
		slices.SortFunc(hs, func(a, b holder) int {
			ta, tb := a.svc.GetMetadata().GetCreationTimestamp().AsTime(), b.svc.GetMetadata().GetCreationTimestamp().AsTime()
			if c := ta.Compare(tb); c != 0 {
				return c
			}
			return cmp.Compare(a.key, b.key)
		})
		keeper, k := hs[0], kindOf(key)
		for _, h := range hs[1:] {
			res.Duplicates++
			r.event(ctx, h.svc, k.component, k.dup, k.what(key)+" was assigned to multiple services; please recreate service")
		}
		kv, ok := stored[key]
		switch {
		case ok && bytes.Equal(kv.Value, keeper.owner()):
			continue
		case !ok && !inRange[key]:
			continue // nothing to keep it from: the range no longer has it
		}
		op := storage.OpCreate(key, keeper.owner())
		if ok {
			op = storage.OpUpdate(key, keeper.owner(), kv.Rev)
		}
		if _, err := r.Store.Txn(ctx, op, storage.OpCheck(keeper.key, keeper.rev)); err != nil {
			if errors.As(err, new(*storage.TxnError)) {
				continue // someone wrote meanwhile: next round
			}
			return res, err
		}
		res.Restored++
		r.event(ctx, keeper.svc, k.component, k.notAllocated, k.what(key)+" is not allocated; repairing")
	}
	for key, kv := range stored {
		if len(holders[key]) > 0 {
			continue
		}
		if _, ipOK := parseIPKey(key); !ipOK {
			if _, portOK := parsePortKey(key); !portOK {
				continue // not an allocation key
			}
		}
		if _, err := r.Store.Txn(ctx, storage.OpDelete(key, kv.Rev)); err != nil {
			if errors.As(err, new(*storage.TxnError)) {
				continue
			}
			return res, err
		}
		res.Leaked++
		r.log().Warn("service allocation leaked: cleaning up", "key", key, "owner", string(kv.Value))
	}
	return res, nil
}

type value struct {
	key     string
	inRange bool
}

// valuesOf is what h's Service holds, reporting what it cannot: IPs that do
// not parse, values outside the ranges.
func (r *Repair) valuesOf(ctx context.Context, h holder, res *RepairResult) []value {
	s := h.svc.GetSpec()
	var out []value
	if s.GetType() != "ExternalName" {
		for _, ip := range s.GetClusterIPs() {
			if ip == "None" || ip == "" {
				continue
			}
			a, err := netip.ParseAddr(ip)
			if err != nil {
				res.Invalid++
				r.event(ctx, h.svc, ipKind.component, ipKind.notValid, "Cluster IP "+ip+" is not a valid IP; please recreate service")
				continue
			}
			v := value{key: ipKey(a)}
			cidr := r.Allocator.cfg.IPRanges[0].String()
			for _, rg := range r.Allocator.cfg.IPRanges {
				if (a.Unmap().Is4()) == (rg.Family() == "IPv4") {
					cidr = rg.String()
					v.inRange = addrIn(rg, a)
				}
			}
			if !v.inRange {
				res.OutOfRange++
				r.event(ctx, h.svc, ipKind.component, ipKind.outOfRange, fmt.Sprintf("Cluster IP %s is not within the service CIDR %s; please recreate service", a, cidr))
			}
			out = append(out, v)
		}
	}
	pr := r.Allocator.cfg.NodePorts
	seen := map[int32]bool{}
	ports := []int32{s.GetHealthCheckNodePort()}
	for _, p := range s.GetPorts() {
		ports = append(ports, p.NodePort)
	}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			continue
		}
		seen[p] = true
		v := value{key: portKey(p), inRange: pr.Contains(int(p))}
		if !v.inRange {
			res.OutOfRange++
			r.event(ctx, h.svc, portKind.component, portKind.outOfRange, fmt.Sprintf("Port %d is not within the port range %s; please recreate service", p, pr))
		}
		out = append(out, v)
	}
	return out
}

var eventKind, _ = scheme.ForResource("", "events")

// event records a Warning about svc, folding a repeat of the same event
// into its count as upstream's event correlator does, so a problem that
// persists over rounds is one event, not one per round.
func (r *Repair) event(ctx context.Context, svc *corev1.Service, component, reason, message string) {
	if r.Events == nil {
		return
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	m := svc.GetMetadata()
	h := fnv.New64a()
	fmt.Fprint(h, m.GetUid(), reason, message)
	name := m.GetName() + "." + strconv.FormatUint(h.Sum64(), 16)
	ev := &corev1.Event{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: m.GetNamespace()},
		InvolvedObject: &corev1.ObjectReference{Kind: "Service", ApiVersion: "v1", Namespace: m.GetNamespace(),
			Name: m.GetName(), Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion()},
		Reason: reason, Message: message, Type: "Warning",
		Source:             &corev1.EventSource{Component: component},
		ReportingComponent: component,
		FirstTimestamp:     metav1.NewTime(now()), LastTimestamp: metav1.NewTime(now()), Count: 1,
	}
	r.log().Warn(message, "service", m.GetNamespace()+"/"+m.GetName(), "reason", reason)
	_, err := r.Events.Create(ctx, eventKind, ev.Metadata.Namespace, ev, false)
	if apierrors.IsAlreadyExists(err) {
		var o scheme.Object
		cur, gerr := r.Events.Get(ctx, eventKind, ev.Metadata.Namespace, name, "")
		if gerr != nil {
			return
		}
		o = proto.Clone(cur.Msg.(scheme.Object)).(scheme.Object)
		e := o.(*corev1.Event)
		e.Count++
		e.LastTimestamp = metav1.NewTime(now())
		_, err = r.Events.Update(ctx, eventKind, ev.Metadata.Namespace, e, false)
	}
	if err != nil && !apierrors.IsConflict(err) {
		r.log().Error("recording service allocation event", "reason", reason, "err", err)
	}
}
