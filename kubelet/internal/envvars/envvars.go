// Package envvars builds a container's environment the way upstream's kubelet
// does (kubelet_pods.go makeEnvironmentVariables): envFrom first, then env in
// declaration order with $(VAR) expansion against what is already defined and
// the service variables, every valueFrom source, and the service link
// variables of enableServiceLinks.
package envvars

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// Sources is where the values of a container's environment come from.
type Sources struct {
	// ConfigMap and Secret read objects of the pod's namespace; a nil func
	// makes every reference to that kind fail (or be skipped when optional).
	ConfigMap func(ns, name string) (*corev1.ConfigMap, error)
	Secret    func(ns, name string) (*corev1.Secret, error)
	// Services are the cluster's Services (any namespace): those of the pod's
	// namespace become link variables when enableServiceLinks, and the
	// `kubernetes` Service of `default` always does.
	Services []*corev1.Service

	NodeName string
	HostIP   string
	HostIPs  []string
	PodIP    string
	PodIPs   []string

	// NodeAllocatable stands in for a limit the container does not set when
	// a resourceFieldRef asks for it, as upstream's downward API does.
	NodeAllocatable map[string]*metav1.Quantity

	// Event, when set, receives the warnings upstream records on the pod
	// (type "Warning", reason InvalidEnvironmentVariableNames).
	Event func(eventType, reason, message string)
}

// Skipped lists the keys of one envFrom source that are not valid variable
// names and were left out.
type Skipped struct {
	Kind      string // "configMap" or "secret"
	Namespace string
	Name      string
	Keys      []string // with the prefix, sorted
}

// ReasonInvalidEnvironmentVariableNames is the reason of the event upstream
// records for Skipped keys.
const ReasonInvalidEnvironmentVariableNames = "InvalidEnvironmentVariableNames"

// Message is upstream's event text for the skipped keys.
func (s Skipped) Message() string {
	return fmt.Sprintf("Keys [%s] from the EnvFrom %s %s/%s were skipped since they are considered invalid environment variable names.",
		strings.Join(s.Keys, ", "), s.Kind, s.Namespace, s.Name)
}

// Env returns the container's environment; warnings about skipped envFrom
// keys go to src.Event. An error means the container cannot be created
// (upstream's CreateContainerConfigError).
func Env(pod *corev1.Pod, c *corev1.Container, src Sources) ([]*runtimeapi.KeyValue, error) {
	env, skipped, err := Build(pod, c, src)
	if src.Event != nil {
		for _, s := range skipped {
			src.Event("Warning", ReasonInvalidEnvironmentVariableNames, s.Message())
		}
	}
	return env, err
}

// Build is Env returning the skipped envFrom keys instead of reporting them.
//
// The order is deterministic: variables in the order they were first
// defined (envFrom sources in order, each source's keys sorted, then env in
// declaration order; a later definition of a name replaces the value in
// place), then the service variables not otherwise defined, sorted.
func Build(pod *corev1.Pod, c *corev1.Container, src Sources) ([]*runtimeapi.KeyValue, []Skipped, error) {
	ns := pod.GetMetadata().GetNamespace()
	serviceEnv := ServiceEnv(ns, enableServiceLinks(pod), src.Services)

	r := resolver{pod: pod, src: src, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	var (
		order   []string
		values  = map[string]string{}
		skipped []Skipped
	)
	set := func(k, v string) {
		if _, ok := values[k]; !ok {
			order = append(order, k)
		}
		values[k] = v
	}

	for _, ef := range c.GetEnvFrom() {
		var (
			kind, name string
			data       map[string]string
		)
		switch {
		case ef.GetConfigMapRef() != nil:
			kind, name = "configMap", ef.GetConfigMapRef().GetLocalObjectReference().GetName()
			cm, err := r.configMap(name)
			if err != nil {
				if IsNotFound(err) && ef.GetConfigMapRef().GetOptional() {
					continue
				}
				return nil, nil, err
			}
			data = cm.GetData()
		case ef.GetSecretRef() != nil:
			kind, name = "secret", ef.GetSecretRef().GetLocalObjectReference().GetName()
			s, err := r.secret(name)
			if err != nil {
				if IsNotFound(err) && ef.GetSecretRef().GetOptional() {
					continue
				}
				return nil, nil, err
			}
			data = make(map[string]string, len(s.GetData()))
			for k, v := range s.GetData() {
				data[k] = string(v)
			}
		default:
			continue
		}
		var invalid []string
		for _, k := range sortedKeys(data) {
			key := ef.GetPrefix() + k
			if len(validation.IsRelaxedEnvVarName(key)) != 0 {
				invalid = append(invalid, key)
				continue
			}
			set(key, data[k])
		}
		if len(invalid) > 0 {
			sort.Strings(invalid)
			skipped = append(skipped, Skipped{Kind: kind, Namespace: ns, Name: name, Keys: invalid})
		}
	}

	lookup := lookupIn(values, serviceEnv)
	for _, e := range c.GetEnv() {
		v := e.GetValue()
		switch {
		case v != "":
			v = Expand(v, lookup)
		case e.GetValueFrom() != nil:
			var (
				ok  bool
				err error
			)
			v, ok, err = r.valueFrom(c, e.GetValueFrom())
			if err != nil {
				return nil, skipped, err
			}
			if !ok {
				continue // an optional source that is missing defines nothing
			}
		}
		set(e.GetName(), v)
	}

	out := make([]*runtimeapi.KeyValue, 0, len(order)+len(serviceEnv))
	for _, k := range order {
		out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(values[k])})
	}
	for _, k := range sortedKeys(serviceEnv) {
		if _, ok := values[k]; !ok {
			out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(serviceEnv[k])})
		}
	}
	return out, skipped, nil
}

// Command returns the container's command and args with $(VAR) expanded
// against its environment, as upstream's ExpandContainerCommandAndArgs.
func Command(c *corev1.Container, env []*runtimeapi.KeyValue) (command, args []string) {
	m := Map(env)
	lookup := lookupIn(m)
	for _, s := range c.GetCommand() {
		command = append(command, Expand(s, lookup))
	}
	for _, s := range c.GetArgs() {
		args = append(args, Expand(s, lookup))
	}
	return command, args
}

// SubPathExpr expands a volumeMount's subPathExpr against the container's
// environment; as upstream, a reference to an unset or empty variable is an
// error naming the variables.
func SubPathExpr(expr string, env []*runtimeapi.KeyValue) (string, error) {
	m := Map(env)
	var missing []string
	out := Expand(expr, func(name string) (string, bool) {
		v, ok := m[name]
		if !ok || v == "" {
			if !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
		}
		return v, true
	})
	if len(missing) > 0 {
		sort.Strings(missing)
		return "", fmt.Errorf("missing value for %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// Map turns an environment into a lookup table; a later entry wins.
func Map(env []*runtimeapi.KeyValue) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		m[kv.GetKey()] = string(kv.GetValue())
	}
	return m
}

func enableServiceLinks(pod *corev1.Pod) bool {
	// The apiserver defaults the field to true; a pod built without defaults
	// (tests, static pods) gets the same.
	if p := pod.GetSpec().EnableServiceLinks; p != nil {
		return *p
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// resolver fetches each ConfigMap and Secret once per container, as upstream.
type resolver struct {
	pod        *corev1.Pod
	src        Sources
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func (r *resolver) configMap(name string) (*corev1.ConfigMap, error) {
	if cm, ok := r.configMaps[name]; ok {
		return cm, nil
	}
	cm, err := GetConfigMap(r.src.ConfigMap, r.pod.GetMetadata().GetNamespace(), name)
	if err != nil {
		return nil, err
	}
	r.configMaps[name] = cm
	return cm, nil
}

func (r *resolver) secret(name string) (*corev1.Secret, error) {
	if s, ok := r.secrets[name]; ok {
		return s, nil
	}
	s, err := GetSecret(r.src.Secret, r.pod.GetMetadata().GetNamespace(), name)
	if err != nil {
		return nil, err
	}
	r.secrets[name] = s
	return s, nil
}

// valueFrom resolves one env var source; ok is false when an optional source
// or key is missing and the variable is left undefined.
func (r *resolver) valueFrom(c *corev1.Container, vf *corev1.EnvVarSource) (v string, ok bool, err error) {
	ns := r.pod.GetMetadata().GetNamespace()
	switch {
	case vf.GetFieldRef() != nil:
		v, err = PodField(r.pod, vf.GetFieldRef().GetFieldPath(), r.src)
		return v, err == nil, err
	case vf.GetResourceFieldRef() != nil:
		v, err = ContainerResource(r.pod, c, vf.GetResourceFieldRef(), r.src.NodeAllocatable)
		return v, err == nil, err
	case vf.GetConfigMapKeyRef() != nil:
		ref := vf.GetConfigMapKeyRef()
		name, key := ref.GetLocalObjectReference().GetName(), ref.GetKey()
		cm, err := r.configMap(name)
		if err != nil {
			if IsNotFound(err) && ref.GetOptional() {
				return "", false, nil
			}
			return "", false, err
		}
		v, ok := cm.GetData()[key]
		if !ok {
			if ref.GetOptional() {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", key, ns, name)
		}
		return v, true, nil
	case vf.GetSecretKeyRef() != nil:
		ref := vf.GetSecretKeyRef()
		name, key := ref.GetLocalObjectReference().GetName(), ref.GetKey()
		s, err := r.secret(name)
		if err != nil {
			if IsNotFound(err) && ref.GetOptional() {
				return "", false, nil
			}
			return "", false, err
		}
		b, ok := s.GetData()[key]
		if !ok {
			if ref.GetOptional() {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in Secret %s/%s", key, ns, name)
		}
		return string(b), true, nil
	case vf.GetFileKeyRef() != nil:
		return "", false, fmt.Errorf("fileKeyRef is not supported")
	}
	return "", true, nil
}

// NotFoundError is a missing ConfigMap or Secret, worded as upstream's
// kubelet words it: `configmap "x" not found`.
type NotFoundError struct{ Kind, Name string }

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.Kind, e.Name) }

// IsNotFound reports a NotFoundError or an apiserver NotFound.
func IsNotFound(err error) bool {
	var nf *NotFoundError
	return errors.As(err, &nf) || apierrors.IsNotFound(err)
}

// GetConfigMap reads a ConfigMap through get (nil: nothing exists), with
// upstream's wording for a missing one.
func GetConfigMap(get func(ns, name string) (*corev1.ConfigMap, error), ns, name string) (*corev1.ConfigMap, error) {
	return getObject(get, "configmap", ns, name)
}

// GetSecret is GetConfigMap for Secrets: `secret "x" not found`.
func GetSecret(get func(ns, name string) (*corev1.Secret, error), ns, name string) (*corev1.Secret, error) {
	return getObject(get, "secret", ns, name)
}

func getObject[T any](get func(ns, name string) (*T, error), kind, ns, name string) (*T, error) {
	if get == nil {
		return nil, &NotFoundError{Kind: kind, Name: name}
	}
	o, err := get(ns, name)
	switch {
	case err != nil && apierrors.IsNotFound(err), err == nil && o == nil:
		return nil, &NotFoundError{Kind: kind, Name: name}
	case err != nil:
		return nil, fmt.Errorf("failed to get %s %q: %w", kind, name, err)
	}
	return o, nil
}
