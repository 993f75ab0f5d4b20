package podautoscaler

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// Scale is upstream's autoscaling/v1 Scale, as the HPA reads it.
type Scale struct {
	SpecReplicas, StatusReplicas int32
	// Selector is the pods' label selector in string form, as Scale's
	// status.selector.
	Selector        string
	ResourceVersion string
}

// ScaleClient reads and writes a target's scale.
type ScaleClient interface {
	Get(ctx context.Context, k *scheme.Kind, namespace, name string) (*Scale, error)
	Update(ctx context.Context, k *scheme.Kind, namespace, name string, s *Scale) error
}

// objectScales is the scale subresource read off the object itself: the
// API has no scale verb of its own, so spec.replicas is patched with the
// resourceVersion the scale was read at, which is what upstream's
// scale update checks too.
type objectScales struct{ c *client.Client }

func (o objectScales) Get(ctx context.Context, k *scheme.Kind, ns, name string) (*Scale, error) {
	obj, err := o.c.Resource(k, ns).Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return scaleOf(k, obj)
}

func scaleOf(k *scheme.Kind, obj scheme.Object) (*Scale, error) {
	js, err := codec.MarshalJSON(obj)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Spec struct {
			Replicas *int32          `json:"replicas"`
			Selector json.RawMessage `json:"selector"`
		} `json:"spec"`
		Status struct {
			Replicas int32 `json:"replicas"`
		} `json:"status"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, err
	}
	s := &Scale{SpecReplicas: 1, StatusReplicas: doc.Status.Replicas, ResourceVersion: obj.GetMetadata().GetResourceVersion()}
	if doc.Spec.Replicas != nil {
		s.SpecReplicas = *doc.Spec.Replicas
	}
	if len(doc.Spec.Selector) > 0 && string(doc.Spec.Selector) != "null" {
		if k.Group == "" && k.Kind == "ReplicationController" {
			var set map[string]string
			if err := json.Unmarshal(doc.Spec.Selector, &set); err != nil {
				return nil, fmt.Errorf("selector of %s %s: %w", k.Kind, obj.GetMetadata().GetName(), err)
			}
			s.Selector = labels.SelectorFromSet(set).String()
		} else {
			var ls metav1.LabelSelector
			if err := codec.DecodeInto(doc.Spec.Selector, &ls, codec.Options{}); err != nil {
				return nil, fmt.Errorf("selector of %s %s: %w", k.Kind, obj.GetMetadata().GetName(), err)
			}
			sel, err := metav1.LabelSelectorAsSelector(&ls)
			if err != nil {
				return nil, fmt.Errorf("selector of %s %s: %w", k.Kind, obj.GetMetadata().GetName(), err)
			}
			s.Selector = sel.String()
		}
	}
	return s, nil
}

func (o objectScales) Update(ctx context.Context, k *scheme.Kind, ns, name string, s *Scale) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": s.ResourceVersion},
		"spec":     map[string]any{"replicas": s.SpecReplicas},
	})
	if err != nil {
		return err
	}
	_, err = o.c.Resource(k, ns).Patch(ctx, name, "merge", patch, "", false)
	return err
}
