// Package serviceaccount is upstream's ServiceAccount admission plugin: every
// pod runs as a service account ("default" unless it names one), which must
// exist, and pods that automount get the kube-api-access-… projected volume
// (a bound token, the cluster CA, the namespace) mounted where in-cluster
// clients look for it.
package serviceaccount

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/rand"

	"skiff.dev/apiserver/internal/admission"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
)

// PluginName is upstream's name for it.
const PluginName = "ServiceAccount"

// Upstream's names and numbers.
const (
	DefaultServiceAccountName = "default"
	// VolumeNamePrefix starts the projected volume's generated name.
	VolumeNamePrefix = "kube-api-access-"
	// MountPath is where in-cluster clients read token, ca.crt and namespace.
	MountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	// TokenExpirationSeconds is upstream's WarnOnlyBoundTokenExpirationSeconds:
	// the projected token's lifetime, which the kubelet refreshes.
	TokenExpirationSeconds = 3607
	// RootCAConfigMap is what the controller-manager publishes in every namespace.
	RootCAConfigMap = "kube-root-ca.crt"
	// ProjectedDefaultMode is 0644, corev1.ProjectedVolumeSourceDefaultMode.
	ProjectedDefaultMode = 0o644

	mirrorPodAnnotation = "kubernetes.io/config.mirror"
)

// Getter reads service accounts; an absent one is the API's NotFound.
type Getter interface {
	ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error)
}

// Plugin is the ServiceAccount plugin.
type Plugin struct {
	getter Getter
	// generateName picks the volume's name (tests make it fixed).
	generateName func(prefix string) string
}

// New returns the plugin; SetServiceAccountGetter must be called before it
// admits pods.
func New() *Plugin {
	return &Plugin{generateName: func(p string) string { return p + rand.String(5) }}
}

// SetServiceAccountGetter gives the plugin its reader of service accounts.
func (p *Plugin) SetServiceAccountGetter(g Getter) { p.getter = g }

// Name is PluginName.
func (p *Plugin) Name() string { return PluginName }

// Handles pod creation, as upstream.
func (p *Plugin) Handles(op admission.Operation) bool { return op == admission.Create }

func pod(a *admission.Attributes) (*corev1.Pod, bool) {
	if a.Subresource != "" {
		return nil, false
	}
	po, ok := a.Object.(*corev1.Pod)
	if !ok || po.Spec == nil {
		return nil, false // validation answers for a pod without a spec
	}
	return po, true
}

func isMirror(po *corev1.Pod) bool {
	_, ok := po.GetMetadata().GetAnnotations()[mirrorPodAnnotation]
	return ok
}

// Admit fills in the service account, the token volume and the image pull
// secrets.
func (p *Plugin) Admit(ctx context.Context, a *admission.Attributes) error {
	po, ok := pod(a)
	if !ok || isMirror(po) {
		return nil // mirror pods are checked by Validate
	}
	if po.Spec.ServiceAccountName == "" {
		po.Spec.ServiceAccountName = DefaultServiceAccountName
	}
	sa, err := p.serviceAccount(ctx, a, po)
	if err != nil {
		return err
	}
	if automount(sa, po) {
		p.mountToken(po)
	}
	if len(po.Spec.ImagePullSecrets) == 0 {
		for _, s := range sa.GetImagePullSecrets() {
			po.Spec.ImagePullSecrets = append(po.Spec.ImagePullSecrets, &corev1.LocalObjectReference{Name: s.GetName()})
		}
	}
	return nil
}

// Validate refuses pods without an existing service account, and mirror pods
// that would reach for API credentials the kubelet cannot vouch for.
func (p *Plugin) Validate(ctx context.Context, a *admission.Attributes) error {
	po, ok := pod(a)
	if !ok {
		return nil
	}
	forbid := func(why string) error { return apierrors.NewForbidden(a.Kind.GroupResource(), a.Name, why) }
	if isMirror(po) {
		if po.Spec.ServiceAccountName != "" {
			return forbid("a mirror pod may not reference service accounts")
		}
		if referencesSecrets(po) {
			return forbid("a mirror pod may not reference secrets")
		}
		for _, v := range po.Spec.Volumes {
			for _, src := range v.GetVolumeSource().GetProjected().GetSources() {
				if src.ServiceAccountToken != nil {
					return forbid("a mirror pod may not use ServiceAccountToken volume projections")
				}
			}
		}
		return nil
	}
	if po.Spec.ServiceAccountName == "" {
		return forbid(fmt.Sprintf("no service account specified for pod %s/%s", a.Namespace, a.Name))
	}
	_, err := p.serviceAccount(ctx, a, po)
	return err
}

func (p *Plugin) serviceAccount(ctx context.Context, a *admission.Attributes, po *corev1.Pod) (*corev1.ServiceAccount, error) {
	if p.getter == nil {
		return nil, apierrors.NewInternal(fmt.Errorf("%s: no service account getter", PluginName))
	}
	name := po.Spec.ServiceAccountName
	sa, err := p.getter.ServiceAccount(ctx, a.Namespace, name)
	if apierrors.IsNotFound(err) {
		// upstream's lister wording: the singular resource.
		err = fmt.Errorf("serviceaccount %q not found", name)
	}
	if err != nil {
		return nil, apierrors.NewForbidden(a.Kind.GroupResource(), a.Name,
			fmt.Sprintf("error looking up service account %s/%s: %v", a.Namespace, name, err))
	}
	return sa, nil
}

// automount: the pod's choice, else the service account's, else yes.
func automount(sa *corev1.ServiceAccount, po *corev1.Pod) bool {
	if po.Spec.AutomountServiceAccountToken != nil {
		return *po.Spec.AutomountServiceAccountToken
	}
	if sa.AutomountServiceAccountToken != nil {
		return *sa.AutomountServiceAccountToken
	}
	return true
}

// mountToken mounts the token volume read-only at MountPath in every init
// container and container that has nothing there yet, and adds the volume
// when one of them needs it. A pod that already has a kube-api-access-
// volume keeps it.
func (p *Plugin) mountToken(po *corev1.Pod) {
	name, have := "", false
	for _, v := range po.Spec.Volumes {
		if strings.HasPrefix(v.Name, VolumeNamePrefix) {
			name, have = v.Name, true
			break
		}
	}
	if name == "" {
		name = p.generateName(VolumeNamePrefix)
	}
	needed := false
	mount := func(cs []*corev1.Container) {
		for _, c := range cs {
			taken := false
			for _, m := range c.VolumeMounts {
				if m.MountPath == MountPath {
					taken = true
					break
				}
			}
			if !taken {
				c.VolumeMounts = append(c.VolumeMounts, &corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: MountPath})
				needed = true
			}
		}
	}
	mount(po.Spec.InitContainers)
	mount(po.Spec.Containers)
	if needed && !have {
		po.Spec.Volumes = append(po.Spec.Volumes, &corev1.Volume{Name: name, VolumeSource: &corev1.VolumeSource{Projected: TokenVolumeSource()}})
	}
}

// TokenVolumeSource is upstream's projection: the token, the cluster CA and
// the namespace, mode 0644 set explicitly as upstream does.
func TokenVolumeSource() *corev1.ProjectedVolumeSource {
	mode := int32(ProjectedDefaultMode)
	exp := int64(TokenExpirationSeconds)
	return &corev1.ProjectedVolumeSource{
		DefaultMode: &mode,
		Sources: []*corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: &corev1.LocalObjectReference{Name: RootCAConfigMap},
				Items:                []*corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []*corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{ApiVersion: "v1", FieldPath: "metadata.namespace"}},
			}}},
		},
	}
}

// referencesSecrets reports any use of a Secret: volumes, projections,
// environment and image pull secrets.
func referencesSecrets(po *corev1.Pod) bool {
	if len(po.Spec.ImagePullSecrets) > 0 {
		return true
	}
	for _, v := range po.Spec.Volumes {
		vs := v.GetVolumeSource()
		if vs.GetSecret() != nil {
			return true
		}
		for _, src := range vs.GetProjected().GetSources() {
			if src.Secret != nil {
				return true
			}
		}
	}
	var cs []*corev1.Container
	cs = append(cs, po.Spec.InitContainers...)
	cs = append(cs, po.Spec.Containers...)
	for _, c := range cs {
		for _, e := range c.Env {
			if e.GetValueFrom().GetSecretKeyRef() != nil {
				return true
			}
		}
		for _, e := range c.EnvFrom {
			if e.GetSecretRef() != nil {
				return true
			}
		}
	}
	return false
}
