// Package validation is upstream's API validation for Skiff's kinds: every
// field error of an object at once, with upstream's paths and wording
// (`spec.replicas: Invalid value: -2: must be greater than or equal to 0`).
// Objects arrive defaulted; a rule that needs a defaulted field skips it when
// the field is empty.
package validation

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	k8smeta "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

type nameFunc func(name string, prefix bool) []string

var (
	dnsSubdomain = apivalidation.NameIsDNSSubdomain
	dnsLabel     = apivalidation.NameIsDNSLabel
	pathSegment  = func(name string, prefix bool) []string { return validatePathSegment(name, prefix) }
)

func validatePathSegment(name string, prefix bool) []string {
	var errs []string
	if name == "." || name == ".." {
		errs = append(errs, fmt.Sprintf("may not be '%s'", name))
	}
	for _, bad := range []string{"/", "%"} {
		if strings.Contains(name, bad) {
			errs = append(errs, fmt.Sprintf("may not contain '%s'", bad))
		}
	}
	return errs
}

// objectMeta checks metadata as upstream's ValidateObjectMeta does.
func objectMeta(m *metav1.ObjectMeta, namespaced bool, names nameFunc, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if m == nil {
		return field.ErrorList{field.Required(path, "")}
	}
	if m.GenerateName != "" {
		for _, msg := range names(m.GenerateName, true) {
			errs = append(errs, field.Invalid(path.Child("generateName"), m.GenerateName, msg))
		}
	}
	if m.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), "name or generateName is required"))
	} else {
		for _, msg := range names(m.Name, false) {
			errs = append(errs, field.Invalid(path.Child("name"), m.Name, msg))
		}
	}
	if namespaced {
		if m.Namespace == "" {
			errs = append(errs, field.Required(path.Child("namespace"), ""))
		} else {
			for _, msg := range apivalidation.ValidateNamespaceName(m.Namespace, false) {
				errs = append(errs, field.Invalid(path.Child("namespace"), m.Namespace, msg))
			}
		}
	} else if m.Namespace != "" {
		errs = append(errs, field.Forbidden(path.Child("namespace"), "not allowed on this type"))
	}
	if m.Generation < 0 {
		errs = append(errs, field.Invalid(path.Child("generation"), m.Generation, "must be greater than or equal to 0"))
	}
	errs = append(errs, metavalidation.ValidateLabels(m.Labels, path.Child("labels"))...)
	errs = append(errs, apivalidation.ValidateAnnotations(m.Annotations, path.Child("annotations"))...)
	for i, r := range m.OwnerReferences {
		p := path.Child("ownerReferences").Index(i)
		if r.ApiVersion == "" {
			errs = append(errs, field.Invalid(p.Child("apiVersion"), r.ApiVersion, "version must not be empty"))
		}
		if r.Kind == "" {
			errs = append(errs, field.Invalid(p.Child("kind"), r.Kind, "kind must not be empty"))
		}
		if r.Name == "" {
			errs = append(errs, field.Invalid(p.Child("name"), r.Name, "name must not be empty"))
		}
		if r.Uid == "" {
			errs = append(errs, field.Invalid(p.Child("uid"), r.Uid, "uid must not be empty"))
		}
	}
	for i, f := range m.Finalizers {
		for _, msg := range validation.IsQualifiedName(f) {
			errs = append(errs, field.Invalid(path.Child("finalizers").Index(i), f, msg))
		}
	}
	return errs
}

// metaUpdate checks what may not change on update.
func metaUpdate(m, old *metav1.ObjectMeta, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if m.Name != old.Name {
		errs = append(errs, field.Invalid(path.Child("name"), m.Name, "field is immutable"))
	}
	if m.Namespace != old.Namespace {
		errs = append(errs, field.Invalid(path.Child("namespace"), m.Namespace, "field is immutable"))
	}
	return errs
}

// labelSelector validates a selector as upstream's ValidateLabelSelector.
func labelSelector(s *metav1.LabelSelector, path *field.Path) field.ErrorList {
	if s == nil {
		return nil
	}
	return metavalidation.ValidateLabelSelector(toK8s(s), metavalidation.LabelSelectorValidationOptions{}, path)
}

func toK8s(s *metav1.LabelSelector) *k8smeta.LabelSelector {
	out := &k8smeta.LabelSelector{MatchLabels: s.MatchLabels}
	for _, e := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, k8smeta.LabelSelectorRequirement{
			Key: e.Key, Operator: k8smeta.LabelSelectorOperator(e.Operator), Values: e.Values,
		})
	}
	return out
}

func nonNegative(v int64, path *field.Path) field.ErrorList {
	if v < 0 {
		return field.ErrorList{field.Invalid(path, v, "must be greater than or equal to 0")}
	}
	return nil
}

func positive(v int64, path *field.Path) field.ErrorList {
	if v <= 0 {
		return field.ErrorList{field.Invalid(path, v, "must be greater than 0")}
	}
	return nil
}

func oneOf(v string, path *field.Path, allowed ...string) field.ErrorList {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(path, v, allowed)}
}

func immutable(changed bool, path *field.Path, v any) field.ErrorList {
	if changed {
		return field.ErrorList{field.Invalid(path, v, "field is immutable")}
	}
	return nil
}

func equal(a, b proto.Message) bool { return proto.Equal(a, b) }

// ValidateStatusUpdate validates a status write: metadata identity only, the
// status itself is the controllers' to say.
func ValidateStatusUpdate(obj, old proto.Message) field.ErrorList {
	o, ok1 := obj.(scheme.Object)
	p, ok2 := old.(scheme.Object)
	if !ok1 || !ok2 {
		return nil
	}
	return metaUpdate(o.GetMetadata(), p.GetMetadata(), field.NewPath("metadata"))
}

// PathSegment is upstream's IsValidPathSegmentName: what a name or namespace
// in a request may not be, since it becomes part of a storage key.
func PathSegment(name string) []string { return validatePathSegment(name, false) }

// nonNil is p, or an empty T when the object came without it: a request may
// omit any message, and validation reads fields through it.
func nonNil[T any](p *T) *T {
	if p == nil {
		return new(T)
	}
	return p
}
