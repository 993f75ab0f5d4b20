package replicaset

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// owner is a ReplicaSet or a ReplicationController: the stored object, for
// owner references, events and writes, and its view as a ReplicaSet, for
// everything the controller computes. Upstream converts RCs to RSs the same
// way (pkg/controller/replication's conversion), as if the RC were an older
// version of the RS. Both are shared with the informer cache: never modify.
type owner struct {
	obj scheme.Object
	rs  *appsv1.ReplicaSet
}

// workloads is what differs between the two kinds: their cache, their
// client, and the conversion to and from a ReplicaSet.
type workloads interface {
	kind() *scheme.Kind
	informer() *informer.Informer
	// get reads the cache; an apierrors NotFound when absent.
	get(namespace, name string) (owner, error)
	list(namespace string) []owner
	// byController lists, from the cache, the objects whose controller has
	// the UID (the controllerUID index).
	byController(uid string) []owner
	// fetch reads the apiserver, bypassing the cache.
	fetch(ctx context.Context, namespace, name string) (owner, error)
	// updateStatus writes st as o's status; o's resourceVersion guards it.
	updateStatus(ctx context.Context, o owner, st *appsv1.ReplicaSetStatus) (owner, error)
	// terminatingReplicas says whether the kind's status counts
	// terminating pods (ReplicaSets do, ReplicationControllers do not).
	terminatingReplicas() bool
}

// typedWorkloads implements workloads for T, given the conversions.
type typedWorkloads[T scheme.Object] struct {
	k       *scheme.Kind
	inf     *informer.Informer
	lister  informers.Lister[T]
	c       *client.Client
	view    func(T) *appsv1.ReplicaSet
	withSt  func(T, *appsv1.ReplicaSetStatus) T
	counted bool
}

// controllerUIDIndex indexes owners by their own controller's UID, to find
// the ReplicaSets of one Deployment (upstream's index of the same name).
const controllerUIDIndex = "controllerUID"

func controllerUID(obj scheme.Object) []string {
	if ref := metav1.GetControllerOf(obj.GetMetadata()); ref != nil {
		return []string{ref.GetUid()}
	}
	return nil
}

func newTypedWorkloads[T scheme.Object](f *informers.Factory, c *client.Client, view func(T) *appsv1.ReplicaSet,
	withStatus func(T, *appsv1.ReplicaSetStatus) T, terminating bool) (*typedWorkloads[T], error) {
	t := informers.For[T](f)
	var zero T
	k, _ := scheme.ForMessage(zero)
	// The informer is shared: another controller may have added upstream's
	// index already, which is then the same index.
	if err := t.Informer().AddIndexers(map[string]informer.IndexFunc{controllerUIDIndex: controllerUID}); err != nil &&
		!strings.Contains(err.Error(), "already exists") {
		return nil, err
	}
	return &typedWorkloads[T]{k: k, inf: t.Informer(), lister: t.Lister(), c: c, view: view, withSt: withStatus, counted: terminating}, nil
}

func (w *typedWorkloads[T]) kind() *scheme.Kind           { return w.k }
func (w *typedWorkloads[T]) informer() *informer.Informer { return w.inf }
func (w *typedWorkloads[T]) terminatingReplicas() bool    { return w.counted }

func (w *typedWorkloads[T]) wrap(o T) owner { return owner{obj: o, rs: w.view(o)} }

func (w *typedWorkloads[T]) get(namespace, name string) (owner, error) {
	o, err := w.lister.Get(namespace, name)
	if err != nil {
		return owner{}, err
	}
	return w.wrap(o), nil
}

func (w *typedWorkloads[T]) list(namespace string) []owner {
	objs := w.lister.Namespace(namespace).List(nil)
	out := make([]owner, len(objs))
	for i, o := range objs {
		out[i] = w.wrap(o)
	}
	return out
}

func (w *typedWorkloads[T]) byController(uid string) []owner {
	objs := w.inf.ByIndex(controllerUIDIndex, uid)
	out := make([]owner, len(objs))
	for i, o := range objs {
		out[i] = w.wrap(o.(T))
	}
	return out
}

func (w *typedWorkloads[T]) fetch(ctx context.Context, namespace, name string) (owner, error) {
	o, err := client.For[T](w.c, namespace).Get(ctx, name)
	if err != nil {
		return owner{}, err
	}
	return w.wrap(o), nil
}

func (w *typedWorkloads[T]) updateStatus(ctx context.Context, o owner, st *appsv1.ReplicaSetStatus) (owner, error) {
	obj := o.obj.(T)
	updated, err := client.For[T](w.c, obj.GetMetadata().GetNamespace()).UpdateStatus(ctx, w.withSt(obj, st))
	if err != nil {
		return owner{}, err
	}
	return w.wrap(updated), nil
}

// newReplicaSets are the ReplicaSets of apps/v1, which need no conversion.
func newReplicaSets(f *informers.Factory, c *client.Client) (workloads, error) {
	return newTypedWorkloads(f, c,
		func(rs *appsv1.ReplicaSet) *appsv1.ReplicaSet { return rs },
		func(rs *appsv1.ReplicaSet, st *appsv1.ReplicaSetStatus) *appsv1.ReplicaSet {
			out := proto.Clone(rs).(*appsv1.ReplicaSet)
			out.Status = st
			return out
		}, true)
}

// newReplicationControllers are the ReplicationControllers of core/v1.
func newReplicationControllers(f *informers.Factory, c *client.Client) (workloads, error) {
	return newTypedWorkloads(f, c, rcAsReplicaSet, rcWithStatus, false)
}

// rcAsReplicaSet views an RC as a ReplicaSet. The view shares the RC's
// metadata and template; its selector is the RC's map as matchLabels.
func rcAsReplicaSet(rc *corev1.ReplicationController) *appsv1.ReplicaSet {
	spec := rc.GetSpec()
	rs := &appsv1.ReplicaSet{
		Metadata: rc.GetMetadata(),
		Spec: &appsv1.ReplicaSetSpec{
			Replicas:        spec.Replicas,
			MinReadySeconds: spec.GetMinReadySeconds(),
			Template:        spec.GetTemplate(),
		},
	}
	if spec.GetSelector() != nil {
		rs.Spec.Selector = &metav1.LabelSelector{MatchLabels: spec.GetSelector()}
	}
	if st := rc.GetStatus(); st != nil {
		rs.Status = &appsv1.ReplicaSetStatus{
			Replicas:             st.GetReplicas(),
			FullyLabeledReplicas: st.GetFullyLabeledReplicas(),
			ReadyReplicas:        st.GetReadyReplicas(),
			AvailableReplicas:    st.GetAvailableReplicas(),
			ObservedGeneration:   st.GetObservedGeneration(),
		}
		for _, c := range st.GetConditions() {
			rs.Status.Conditions = append(rs.Status.Conditions, &appsv1.ReplicaSetCondition{
				Type: c.GetType(), Status: c.GetStatus(), LastTransitionTime: c.GetLastTransitionTime(),
				Reason: c.GetReason(), Message: c.GetMessage(),
			})
		}
	}
	return rs
}

// rcWithStatus is a copy of rc carrying st converted to an RC's status.
func rcWithStatus(rc *corev1.ReplicationController, st *appsv1.ReplicaSetStatus) *corev1.ReplicationController {
	out := proto.Clone(rc).(*corev1.ReplicationController)
	out.Status = &corev1.ReplicationControllerStatus{
		Replicas:             st.GetReplicas(),
		FullyLabeledReplicas: st.GetFullyLabeledReplicas(),
		ReadyReplicas:        st.GetReadyReplicas(),
		AvailableReplicas:    st.GetAvailableReplicas(),
		ObservedGeneration:   st.GetObservedGeneration(),
	}
	for _, c := range st.GetConditions() {
		out.Status.Conditions = append(out.Status.Conditions, &corev1.ReplicationControllerCondition{
			Type: c.GetType(), Status: c.GetStatus(), LastTransitionTime: c.GetLastTransitionTime(),
			Reason: c.GetReason(), Message: c.GetMessage(),
		})
	}
	return out
}
