// Package strategic is upstream's strategic merge patch for Skiff's kinds:
// lists merge by their merge keys (containers and env by name, ports by
// containerPort, …) instead of being replaced whole. The patch metadata comes
// from the k8s.io/api Go types, the same struct tags kubectl and
// kube-apiserver read, so a patch means here what it means upstream. The
// apiserver applies such patches and skiffctl apply computes them.
package strategic

import (
	"errors"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/mergepatch"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"skiff.dev/proto/scheme"
)

// ErrNoSchema: upstream has no Go type for the kind, so lists cannot be
// merged by key; callers fall back to a JSON merge patch.
var ErrNoSchema = errors.New("no strategic merge patch schema for this kind")

var upstream = sync.OnceValue(func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, discoveryv1.AddToScheme,
		coordinationv1.AddToScheme, rbacv1.AddToScheme, autoscalingv1.AddToScheme, autoscalingv2.AddToScheme,
		policyv1.AddToScheme, schedulingv1.AddToScheme, storagev1.AddToScheme,
	} {
		// Registering known types into a fresh scheme cannot fail.
		_ = add(s)
	}
	return s
})

// Schema is the patch metadata of a kind.
func Schema(k *scheme.Kind) (strategicpatch.LookupPatchMeta, error) {
	obj, err := upstream().New(schema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.GroupResource(), ErrNoSchema)
	}
	return strategicpatch.NewPatchMetaFromStruct(obj)
}

// Apply applies a strategic merge patch to a JSON document of kind k.
func Apply(k *scheme.Kind, doc, patch []byte) ([]byte, error) {
	meta, err := Schema(k)
	if err != nil {
		return nil, err
	}
	return strategicpatch.StrategicMergePatchUsingLookupPatchMeta(doc, patch, meta)
}

// ThreeWay is the patch kubectl apply sends: what changed from the last
// applied configuration (original) to the file (modified), computed against
// the live object (current), so that a field set in the file and changed by
// hand on the live object is set back, a field removed from the file is
// removed, and fields only others set are left alone. It fails when the
// file changes a field someone else also changed only if overwrite is false.
func ThreeWay(k *scheme.Kind, original, modified, current []byte, overwrite bool) ([]byte, error) {
	meta, err := Schema(k)
	if err != nil {
		return nil, err
	}
	return strategicpatch.CreateThreeWayMergePatch(original, modified, current, meta, overwrite,
		mergepatch.RequireKeyUnchanged("apiVersion"), mergepatch.RequireKeyUnchanged("kind"),
		mergepatch.RequireMetadataKeyUnchanged("name"))
}
