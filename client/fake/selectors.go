package fake

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// selectableFields are, per resource, the fields beyond metadata.name and
// metadata.namespace that upstream lets a field selector use.
var selectableFields = map[string][]string{
	"pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
		"spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
	"nodes":                  {"spec.unschedulable"},
	"namespaces":             {"status.phase"},
	"secrets":                {"type"},
	"services":               {"spec.clusterIP", "spec.type"},
	"replicasets":            {"status.replicas"},
	"replicationcontrollers": {"status.replicas"},
	"jobs":                   {"status.successful"},
	"events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
		"involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
		"involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
}

// filter is what a list or watch selects: a namespace and selectors.
type filter struct {
	kind  *scheme.Kind
	ns    string
	label labels.Selector
	field fields.Selector
}

func newFilter(k *scheme.Kind, ns, labelSel, fieldSel string) (*filter, error) {
	f := &filter{kind: k, label: labels.Everything(), field: fields.Everything()}
	if k.Namespaced {
		f.ns = ns
	}
	if labelSel != "" {
		sel, err := labels.Parse(labelSel)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		f.label = sel
	}
	if fieldSel != "" {
		sel, err := fields.ParseSelector(fieldSel)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		allowed := map[string]bool{"metadata.name": true, "metadata.namespace": k.Namespaced}
		for _, p := range selectableFields[k.Resource] {
			allowed[p] = true
		}
		for _, r := range sel.Requirements() {
			if !allowed[r.Field] {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", r.Field))
			}
		}
		f.field = sel
	}
	return f, nil
}

func (f *filter) matches(o scheme.Object) bool {
	m := o.GetMetadata()
	if f.ns != "" && m.GetNamespace() != f.ns {
		return false
	}
	if !f.label.Empty() && !f.label.Matches(labels.Set(m.GetLabels())) {
		return false
	}
	return f.field.Empty() || f.field.Matches(fieldSet(f.kind, o))
}

// fieldSet is the object's selectable fields, formatted as upstream's
// field selectors see them.
func fieldSet(k *scheme.Kind, o scheme.Object) fields.Set {
	m := o.GetMetadata()
	set := fields.Set{"metadata.name": m.GetName()}
	if k.Namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	for _, p := range selectableFields[k.Resource] {
		path := p
		if p == "source" { // upstream's events select on source.component
			path = "source.component"
		}
		set[p] = valueAt(o.ProtoReflect(), strings.Split(path, "."))
	}
	return set
}

// valueAt follows JSON field names through messages to a scalar.
func valueAt(m protoreflect.Message, path []string) string {
	for i, name := range path {
		fds := m.Descriptor().Fields()
		fd := fds.ByJSONName(name)
		if fd == nil {
			fd = fds.ByName(protoreflect.Name(name))
		}
		if fd == nil || fd.IsList() || fd.IsMap() {
			return ""
		}
		if i < len(path)-1 {
			if fd.Kind() != protoreflect.MessageKind || !m.Has(fd) {
				return ""
			}
			m = m.Get(fd).Message()
			continue
		}
		v := m.Get(fd)
		switch fd.Kind() {
		case protoreflect.StringKind:
			return v.String()
		case protoreflect.BoolKind:
			return strconv.FormatBool(v.Bool())
		case protoreflect.Int32Kind, protoreflect.Int64Kind:
			return strconv.FormatInt(v.Int(), 10)
		}
	}
	return ""
}
