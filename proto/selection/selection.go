// Package selection computes the label and field sets that list and watch
// selectors match against, with upstream's selectable fields per kind.
package selection

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/proto/scheme"
)

// selectable lists, per resource, the fields beyond metadata.name and
// metadata.namespace that upstream lets a field selector use.
var selectable = map[string][]string{
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

// Fields returns the object's selectable fields.
func Fields(k *scheme.Kind, obj scheme.Object) fields.Set {
	m := obj.GetMetadata()
	set := fields.Set{"metadata.name": m.GetName()}
	if k.Namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	for _, path := range selectable[k.Resource] {
		if path == "source" { // upstream selects events on source.component
			path = "source.component"
			set["source"] = valueAt(obj.ProtoReflect(), strings.Split(path, "."))
			continue
		}
		set[path] = valueAt(obj.ProtoReflect(), strings.Split(path, "."))
	}
	return set
}

// Labels returns the object's labels as a set.
func Labels(obj scheme.Object) labels.Set {
	return labels.Set(obj.GetMetadata().GetLabels())
}

// ParseFields parses a field selector, refusing fields the kind does not
// select on, with upstream's message.
func ParseFields(k *scheme.Kind, s string) (fields.Selector, error) {
	if s == "" {
		return fields.Everything(), nil
	}
	sel, err := fields.ParseSelector(s)
	if err != nil {
		return nil, err
	}
	allowed := map[string]bool{"metadata.name": true}
	if k.Namespaced {
		allowed["metadata.namespace"] = true
	}
	for _, f := range selectable[k.Resource] {
		allowed[f] = true
	}
	for _, r := range sel.Requirements() {
		if !allowed[r.Field] {
			return nil, fmt.Errorf("field label not supported: %s", r.Field)
		}
	}
	return sel, nil
}

// ParseLabels parses a label selector.
func ParseLabels(s string) (labels.Selector, error) {
	if s == "" {
		return labels.Everything(), nil
	}
	return labels.Parse(s)
}

// valueAt follows JSON field names through messages and formats the scalar
// at the end as upstream's field selectors see it.
func valueAt(m protoreflect.Message, path []string) string {
	for i, name := range path {
		fd := byJSONName(m.Descriptor(), name)
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

func byJSONName(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(name); fd != nil {
		return fd
	}
	return md.Fields().ByName(protoreflect.Name(name))
}
