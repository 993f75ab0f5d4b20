package metav1

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// NewTime is t as upstream stores it: whole seconds, UTC.
func NewTime(t time.Time) *Time {
	return &Time{Seconds: t.Unix()}
}

// Now is the current time, to the second.
func Now() *Time { return NewTime(time.Now()) }

// AsTime is the time; the zero time for nil.
func (x *Time) AsTime() time.Time {
	if x == nil {
		return time.Time{}
	}
	return time.Unix(x.Seconds, int64(x.Nanos)).UTC()
}

// IsZero reports an unset time.
func (x *Time) IsZero() bool { return x == nil || (x.Seconds == 0 && x.Nanos == 0) }

// LabelSelectorAsSelector is upstream's conversion: nil selects nothing, an
// empty selector everything.
func LabelSelectorAsSelector(ps *LabelSelector) (labels.Selector, error) {
	if ps == nil {
		return labels.Nothing(), nil
	}
	if len(ps.MatchLabels)+len(ps.MatchExpressions) == 0 {
		return labels.Everything(), nil
	}
	sel := labels.NewSelector()
	for k, v := range ps.MatchLabels {
		r, err := labels.NewRequirement(k, selection.Equals, []string{v})
		if err != nil {
			return nil, err
		}
		sel = sel.Add(*r)
	}
	for _, e := range ps.MatchExpressions {
		op, ok := SelectorOperator(e.Operator)
		if !ok {
			return nil, fmt.Errorf("%q is not a valid label selector operator", e.Operator)
		}
		r, err := labels.NewRequirement(e.Key, op, append([]string(nil), e.Values...))
		if err != nil {
			return nil, err
		}
		sel = sel.Add(*r)
	}
	return sel, nil
}

// FormatLabelSelector prints a selector as kubectl's columns do.
func FormatLabelSelector(ps *LabelSelector) string {
	sel, err := LabelSelectorAsSelector(ps)
	if err != nil {
		return "<error>"
	}
	s := sel.String()
	if s == "" {
		return "<none>"
	}
	return s
}

// IntOrStringFromInt is an int value.
func IntOrStringFromInt(i int32) *IntOrString { return &IntOrString{Type: 0, IntVal: i} }

// IntOrStringFromString is a string value ("25%", "http").
func IntOrStringFromString(s string) *IntOrString { return &IntOrString{Type: 1, StrVal: s} }

// IsString reports a string value.
func (x *IntOrString) IsString() bool { return x != nil && x.Type == 1 }

// Text is the value as upstream prints it.
func (x *IntOrString) Text() string {
	if x.IsString() {
		return x.StrVal
	}
	return strconv.Itoa(int(x.GetIntVal()))
}

// ScaledValue is upstream's GetScaledValueFromIntOrPercent: an int as is, a
// percentage of total rounded up or down.
func (x *IntOrString) ScaledValue(total int, roundUp bool) (int, error) {
	if x == nil {
		return 0, fmt.Errorf("nil value for IntOrString")
	}
	if !x.IsString() {
		return int(x.IntVal), nil
	}
	s := strings.TrimSuffix(x.StrVal, "%")
	if s == x.StrVal {
		return 0, fmt.Errorf("invalid value for IntOrString: invalid type: string is not a percentage")
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("invalid value %q: %v", x.StrVal, err)
	}
	f := float64(v) * float64(total) / 100
	if roundUp {
		return int(math.Ceil(f)), nil
	}
	return int(math.Floor(f)), nil
}

// NewControllerRef is an owner reference marking owner as the controller.
func NewControllerRef(owner interface{ GetMetadata() *ObjectMeta }, apiVersion, kind string) *OwnerReference {
	t := true
	m := owner.GetMetadata()
	return &OwnerReference{ApiVersion: apiVersion, Kind: kind, Name: m.GetName(), Uid: m.GetUid(), Controller: &t, BlockOwnerDeletion: &t}
}

// GetControllerOf returns the controlling owner reference, if any.
func GetControllerOf(m *ObjectMeta) *OwnerReference {
	for _, r := range m.GetOwnerReferences() {
		if r.GetController() {
			return r
		}
	}
	return nil
}

// SelectorOperator is the labels operator of a selector requirement's
// operator (In, NotIn, Exists, DoesNotExist), as label selectors and
// quota scope selectors spell them.
func SelectorOperator(op string) (selection.Operator, bool) {
	switch op {
	case "In":
		return selection.In, true
	case "NotIn":
		return selection.NotIn, true
	case "Exists":
		return selection.Exists, true
	case "DoesNotExist":
		return selection.DoesNotExist, true
	}
	return "", false
}
