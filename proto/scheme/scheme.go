// Package scheme is the table of the kinds Skiff serves: for each, its API
// group and version, its names (kind, plural, singular, short names), its scope
// and the Go message that holds it. Every component finds kinds here, so that
// `skiffctl get deploy`, the apiserver's storage keys and Discovery agree.
package scheme

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	appsv1 "skiff.dev/proto/api/apps/v1"
	authenticationv1 "skiff.dev/proto/api/authentication/v1"
	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	batchv1 "skiff.dev/proto/api/batch/v1"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	metricsv1beta1 "skiff.dev/proto/api/metrics/v1beta1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	rbacv1 "skiff.dev/proto/api/rbac/v1"
	schedulingv1 "skiff.dev/proto/api/scheduling/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/apipb"
)

// Object is a top-level resource: a message with upstream's ObjectMeta.
type Object interface {
	proto.Message
	GetMetadata() *metav1.ObjectMeta
}

// Kind describes one resource.
type Kind struct {
	Group      string // "" for the core group
	Version    string
	Kind       string
	Resource   string // plural, lower case
	Singular   string
	ShortNames []string
	Namespaced bool
	// Categories as upstream: "all" marks the kinds `get all` shows.
	Categories []string
	// Subresources the kind serves ("status", "binding", "eviction", "scale").
	Subresources []string
	// CreateOnly kinds are never stored: a create is answered with the
	// object as the server completed it, and nothing else can be done to
	// them (upstream's TokenReview, verbs [create]).
	CreateOnly bool
	// ReadOnly kinds are never stored either: the server computes them on
	// a get or list (metrics.k8s.io's PodMetrics and NodeMetrics, served
	// upstream by metrics-server with verbs [get list]).
	ReadOnly bool
	message  protoreflect.MessageType
}

// New returns an empty object of the kind, with its metadata allocated.
func (k *Kind) New() Object {
	o := k.message.New().Interface().(Object)
	Meta(o)
	return o
}

// APIVersion is upstream's apiVersion string: "v1", "apps/v1".
func (k *Kind) APIVersion() string {
	if k.Group == "" {
		return k.Version
	}
	return k.Group + "/" + k.Version
}

// GroupResource is "deployments.apps", or "pods" in the core group, as upstream
// names a resource in messages.
func (k *Kind) GroupResource() string {
	if k.Group == "" {
		return k.Resource
	}
	return k.Resource + "." + k.Group
}

// Ref is the kind's name in API requests.
func (k *Kind) Ref() *apipb.Resource {
	return &apipb.Resource{Group: k.Group, Version: k.Version, Resource: k.Resource}
}

// HasStatus reports whether the kind has a status written through UpdateStatus.
func (k *Kind) HasStatus() bool {
	for _, s := range k.Subresources {
		if s == "status" {
			return true
		}
	}
	return false
}

// FullName is the kind's proto message name, "skiff.api.core.v1.Pod".
func (k *Kind) FullName() protoreflect.FullName { return k.message.Descriptor().FullName() }

func kind(group, version string, msg Object, resource, singular string, namespaced bool, short []string, sub ...string) *Kind {
	t := msg.ProtoReflect().Type()
	k := &Kind{
		Group: group, Version: version, Kind: string(t.Descriptor().Name()),
		Resource: resource, Singular: singular, Namespaced: namespaced,
		ShortNames: short, Subresources: sub, message: t,
	}
	return k
}

var all = []*Kind{
	kind("", "v1", &corev1.Namespace{}, "namespaces", "namespace", false, []string{"ns"}, "status", "finalize"),
	kind("", "v1", &corev1.Pod{}, "pods", "pod", true, []string{"po"}, "status", "binding", "eviction", "log", "exec"),
	kind("", "v1", &corev1.Node{}, "nodes", "node", false, []string{"no"}, "status"),
	kind("", "v1", &corev1.Service{}, "services", "service", true, []string{"svc"}, "status"),
	kind("", "v1", &corev1.Endpoints{}, "endpoints", "endpoints", true, []string{"ep"}),
	kind("", "v1", &corev1.ConfigMap{}, "configmaps", "configmap", true, []string{"cm"}),
	kind("", "v1", &corev1.Secret{}, "secrets", "secret", true, nil),
	kind("", "v1", &corev1.ServiceAccount{}, "serviceaccounts", "serviceaccount", true, []string{"sa"}, "token"),
	kind("", "v1", &corev1.Event{}, "events", "event", true, []string{"ev"}),
	kind("", "v1", &corev1.ReplicationController{}, "replicationcontrollers", "replicationcontroller", true, []string{"rc"}, "status", "scale"),
	kind("", "v1", &corev1.PersistentVolume{}, "persistentvolumes", "persistentvolume", false, []string{"pv"}, "status"),
	kind("", "v1", &corev1.PersistentVolumeClaim{}, "persistentvolumeclaims", "persistentvolumeclaim", true, []string{"pvc"}, "status"),
	kind("", "v1", &corev1.ResourceQuota{}, "resourcequotas", "resourcequota", true, []string{"quota"}, "status"),
	kind("", "v1", &corev1.LimitRange{}, "limitranges", "limitrange", true, []string{"limits"}),
	kind("apps", "v1", &appsv1.Deployment{}, "deployments", "deployment", true, []string{"deploy"}, "status", "scale"),
	kind("apps", "v1", &appsv1.ReplicaSet{}, "replicasets", "replicaset", true, []string{"rs"}, "status", "scale"),
	kind("apps", "v1", &appsv1.StatefulSet{}, "statefulsets", "statefulset", true, []string{"sts"}, "status", "scale"),
	kind("apps", "v1", &appsv1.DaemonSet{}, "daemonsets", "daemonset", true, []string{"ds"}, "status"),
	kind("apps", "v1", &appsv1.ControllerRevision{}, "controllerrevisions", "controllerrevision", true, nil),
	kind("batch", "v1", &batchv1.Job{}, "jobs", "job", true, nil, "status"),
	kind("batch", "v1", &batchv1.CronJob{}, "cronjobs", "cronjob", true, []string{"cj"}, "status"),
	kind("discovery.k8s.io", "v1", &discoveryv1.EndpointSlice{}, "endpointslices", "endpointslice", true, nil),
	kind("coordination.k8s.io", "v1", &coordinationv1.Lease{}, "leases", "lease", true, nil),
	kind("rbac.authorization.k8s.io", "v1", &rbacv1.Role{}, "roles", "role", true, nil),
	kind("rbac.authorization.k8s.io", "v1", &rbacv1.ClusterRole{}, "clusterroles", "clusterrole", false, nil),
	kind("rbac.authorization.k8s.io", "v1", &rbacv1.RoleBinding{}, "rolebindings", "rolebinding", true, nil),
	kind("rbac.authorization.k8s.io", "v1", &rbacv1.ClusterRoleBinding{}, "clusterrolebindings", "clusterrolebinding", false, nil),
	kind("autoscaling", "v2", &autoscalingv2.HorizontalPodAutoscaler{}, "horizontalpodautoscalers", "horizontalpodautoscaler", true, []string{"hpa"}, "status"),
	kind("policy", "v1", &policyv1.PodDisruptionBudget{}, "poddisruptionbudgets", "poddisruptionbudget", true, []string{"pdb"}, "status"),
	kind("scheduling.k8s.io", "v1", &schedulingv1.PriorityClass{}, "priorityclasses", "priorityclass", false, []string{"pc"}),
	kind("storage.k8s.io", "v1", &storagev1.StorageClass{}, "storageclasses", "storageclass", false, []string{"sc"}),
	kind("storage.k8s.io", "v1", &storagev1.CSIDriver{}, "csidrivers", "csidriver", false, nil),
	kind("storage.k8s.io", "v1", &storagev1.CSINode{}, "csinodes", "csinode", false, nil),
	kind("storage.k8s.io", "v1", &storagev1.VolumeAttachment{}, "volumeattachments", "volumeattachment", false, nil, "status"),
}

// createOnly are the kinds that are answered, not stored; they are not in
// All, which callers walk to list and watch every stored kind.
var createOnly = []*Kind{
	func() *Kind {
		k := kind("authentication.k8s.io", "v1", &authenticationv1.TokenReview{}, "tokenreviews", "tokenreview", false, nil)
		k.CreateOnly = true
		return k
	}(),
}

// readOnly are the kinds computed on read; like createOnly they are not in
// All.
var readOnly = []*Kind{
	func() *Kind {
		k := kind("metrics.k8s.io", "v1beta1", &metricsv1beta1.NodeMetrics{}, "nodes", "", false, nil)
		k.ReadOnly = true
		return k
	}(),
	func() *Kind {
		k := kind("metrics.k8s.io", "v1beta1", &metricsv1beta1.PodMetrics{}, "pods", "", true, nil)
		k.ReadOnly = true
		return k
	}(),
}

// Verbs are the kind's verbs as Discovery reports them.
func (k *Kind) Verbs() []string {
	if k.CreateOnly {
		return []string{"create"}
	}
	if k.ReadOnly {
		return []string{"get", "list"}
	}
	return []string{"create", "delete", "get", "list", "patch", "update", "watch"}
}

func init() {
	// upstream's "all" category: what `kubectl get all` lists.
	for _, k := range all {
		switch k.Resource {
		case "pods", "services", "replicationcontrollers", "deployments", "replicasets",
			"statefulsets", "daemonsets", "jobs", "cronjobs", "horizontalpodautoscalers":
			k.Categories = []string{"all"}
		}
	}
}

// All returns every stored kind, in a stable order (core first, as
// Discovery lists them).
func All() []*Kind { return all }

// CreateOnly returns the kinds that are answered but never stored
// (TokenReview).
func CreateOnly() []*Kind { return createOnly }

// ReadOnly returns the kinds computed on read and never stored
// (PodMetrics, NodeMetrics).
func ReadOnly() []*Kind { return readOnly }

// every is All, CreateOnly and ReadOnly, for lookups.
var every = append(append(append([]*Kind(nil), all...), createOnly...), readOnly...)

// ForResource finds a kind by group and plural resource name.
func ForResource(group, resource string) (*Kind, bool) {
	for _, k := range every {
		if k.Group == group && k.Resource == resource {
			return k, true
		}
	}
	return nil, false
}

// ForRef finds the kind an API request names.
func ForRef(r *apipb.Resource) (*Kind, error) {
	if r == nil {
		return nil, fmt.Errorf("resource is required")
	}
	k, ok := ForResource(r.GetGroup(), r.GetResource())
	if !ok || (r.GetVersion() != "" && r.GetVersion() != k.Version) {
		return nil, fmt.Errorf("the server could not find the requested resource %q in group %q, version %q", r.GetResource(), r.GetGroup(), r.GetVersion())
	}
	return k, nil
}

// ForGVK finds a kind by apiVersion ("apps/v1") and kind ("Deployment").
func ForGVK(apiVersion, kind string) (*Kind, bool) {
	for _, k := range every {
		if k.APIVersion() == apiVersion && k.Kind == kind {
			return k, true
		}
	}
	return nil, false
}

// ForMessage finds the kind of an object.
func ForMessage(m proto.Message) (*Kind, bool) {
	return ForName(m.ProtoReflect().Descriptor().FullName())
}

// ForName finds a kind by its message's full name.
func ForName(n protoreflect.FullName) (*Kind, bool) {
	for _, k := range every {
		if k.FullName() == n {
			return k, true
		}
	}
	return nil, false
}

// Lookup finds a kind the way kubectl does from a user's word: by plural,
// singular, short name or kind, case-insensitively, optionally qualified by
// group ("deployments.apps", "deploy.apps"). It reports an error naming the word
// when nothing or more than one group matches.
func Lookup(name string) (*Kind, error) {
	word, group, qualified := strings.Cut(strings.ToLower(name), ".")
	var found []*Kind
	for _, k := range every {
		if qualified && k.Group != group && !strings.HasPrefix(k.Group, group+".") {
			continue
		}
		match := word == k.Resource || word == k.Singular || word == strings.ToLower(k.Kind)
		for _, s := range k.ShortNames {
			match = match || word == s
		}
		if match {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("the server doesn't have a resource type %q", name)
	case 1:
		return found[0], nil
	}
	// As kubectl, prefer the core group when a short word is ambiguous.
	sort.SliceStable(found, func(i, j int) bool { return found[i].Group == "" && found[j].Group != "" })
	return found[0], nil
}

// Meta returns the object's metadata, allocating it when unset.
func Meta(o Object) *metav1.ObjectMeta {
	if m := o.GetMetadata(); m != nil {
		return m
	}
	r := o.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("metadata")
	r.Set(fd, protoreflect.ValueOfMessage((&metav1.ObjectMeta{}).ProtoReflect()))
	return o.GetMetadata()
}

// groupOf maps a proto package to upstream's API group.
var groupOf = map[protoreflect.FullName]string{
	"skiff.api.core.v1":           "",
	"skiff.api.meta.v1":           "meta.k8s.io",
	"skiff.api.apps.v1":           "apps",
	"skiff.api.authentication.v1": "authentication.k8s.io",
	"skiff.api.batch.v1":          "batch",
	"skiff.api.discovery.v1":      "discovery.k8s.io",
	"skiff.api.coordination.v1":   "coordination.k8s.io",
	"skiff.api.rbac.v1":           "rbac.authorization.k8s.io",
	"skiff.api.autoscaling.v1":    "autoscaling",
	"skiff.api.autoscaling.v2":    "autoscaling",
	"skiff.api.policy.v1":         "policy",
	"skiff.api.scheduling.v1":     "scheduling.k8s.io",
	"skiff.api.metrics.v1beta1":   "metrics.k8s.io",
}

// subresourceBodies are top-level messages that are not stored kinds but
// travel with apiVersion and kind of their own.
var subresourceBodies = map[protoreflect.FullName]bool{
	"skiff.api.core.v1.Binding":                true,
	"skiff.api.core.v1.PodLogOptions":          true,
	"skiff.api.policy.v1.Eviction":             true,
	"skiff.api.autoscaling.v1.Scale":           true,
	"skiff.api.authentication.v1.TokenRequest": true,
	"skiff.api.meta.v1.Status":                 true,
}

// TypeMetaOf returns the apiVersion and kind a top-level message carries in
// JSON, or two empty strings for a message that is only ever a part of one.
func TypeMetaOf(n protoreflect.FullName) (apiVersion, kind string) {
	if k, ok := ForName(n); ok {
		return k.APIVersion(), k.Kind
	}
	if !subresourceBodies[n] {
		return "", ""
	}
	pkg := n.Parent()
	version := string(pkg.Name())
	if n == "skiff.api.meta.v1.Status" {
		return "v1", "Status"
	}
	if g := groupOf[pkg]; g != "" {
		return g + "/" + version, string(n.Name())
	}
	return version, string(n.Name())
}

// MessageForTypeMeta finds the message of a top-level apiVersion and kind,
// kinds and subresource bodies alike.
func MessageForTypeMeta(apiVersion, kind string) (protoreflect.FullName, bool) {
	if k, ok := ForGVK(apiVersion, kind); ok {
		return k.FullName(), true
	}
	for n := range subresourceBodies {
		if av, kd := TypeMetaOf(n); av == apiVersion && kd == kind {
			return n, true
		}
	}
	return "", false
}
