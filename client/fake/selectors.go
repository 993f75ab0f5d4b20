package fake

import (
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
	"skiff.dev/proto/selection"
)

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
		sel, err := selection.ParseLabels(labelSel)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		f.label = sel
	}
	if fieldSel != "" {
		sel, err := selection.ParseFields(k, fieldSel)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
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
	return f.field.Empty() || f.field.Matches(selection.Fields(f.kind, o))
}
