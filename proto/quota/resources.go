// Package quota is the arithmetic and the usage evaluation of ResourceQuota,
// shared by the apiserver's ResourceQuota admission plugin and the
// controller-manager's resourcequota controller, so that both count an
// object the same way: upstream's pkg/quota/v1 and its core evaluators.
package quota

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	metav1 "skiff.dev/proto/api/meta/v1"
)

// List is a set of named quantities: a quota's hard or used, or what one
// object uses.
type List map[string]resource.Quantity

// FromProto parses the API's map; quantities that do not parse (validation
// refuses them) are left out.
func FromProto(m map[string]*metav1.Quantity) List {
	out := make(List, len(m))
	for k, v := range m {
		q, err := resource.ParseQuantity(v.GetString_())
		if err != nil {
			continue
		}
		out[k] = q
	}
	return out
}

// ToProto is l in the API's shape, each quantity in its canonical form.
func (l List) ToProto() map[string]*metav1.Quantity {
	out := make(map[string]*metav1.Quantity, len(l))
	for k, v := range l {
		out[k] = &metav1.Quantity{String_: v.String()}
	}
	return out
}

// Names are l's resource names, sorted.
func (l List) Names() []string {
	out := make([]string, 0, len(l))
	for k := range l {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Add is a + b.
func Add(a, b List) List {
	out := make(List, len(a)+len(b))
	for k, v := range a {
		out[k] = v.DeepCopy()
	}
	for k, v := range b {
		cur := out[k]
		cur.Add(v)
		out[k] = cur
	}
	return out
}

// SubtractNonNegative is a - b, with every result below zero made zero
// (upstream's SubtractWithNonNegativeResult).
func SubtractNonNegative(a, b List) List {
	out := make(List, len(a))
	for k, v := range a {
		v = v.DeepCopy()
		if o, ok := b[k]; ok {
			v.Sub(o)
		}
		if v.Sign() < 0 {
			v = resource.Quantity{Format: v.Format}
		}
		out[k] = v
	}
	return out
}

// Mask keeps the names given.
func Mask(l List, names []string) List {
	out := List{}
	for _, n := range names {
		if v, ok := l[n]; ok {
			out[n] = v.DeepCopy()
		}
	}
	return out
}

// RemoveZeros drops zero quantities.
func RemoveZeros(l List) List {
	out := List{}
	for k, v := range l {
		if !v.IsZero() {
			out[k] = v
		}
	}
	return out
}

// LessThanOrEqual says whether every quantity of a that b also names is at
// most b's, and names those that are not.
func LessThanOrEqual(a, b List) (bool, []string) {
	var exceeded []string
	for _, k := range a.Names() {
		if limit, ok := b[k]; ok {
			v := a[k]
			if v.Cmp(limit) > 0 {
				exceeded = append(exceeded, k)
			}
		}
	}
	return len(exceeded) == 0, exceeded
}

// Equal says whether a and b name the same resources with equal quantities.
func Equal(a, b List) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		o, ok := b[k]
		if !ok || v.Cmp(o) != 0 {
			return false
		}
	}
	return true
}

// String is upstream's prettyPrint: "a=1,b=2Gi", sorted by name.
func (l List) String() string {
	parts := make([]string, 0, len(l))
	for _, k := range l.Names() {
		v := l[k]
		parts = append(parts, fmt.Sprintf("%s=%s", k, v.String()))
	}
	return strings.Join(parts, ",")
}

// Max is the larger of a and b for each name of either.
func Max(a, b List) List {
	out := make(List, len(a)+len(b))
	for k, v := range a {
		out[k] = v.DeepCopy()
	}
	for k, v := range b {
		if cur, ok := out[k]; !ok || v.Cmp(cur) > 0 {
			out[k] = v.DeepCopy()
		}
	}
	return out
}
