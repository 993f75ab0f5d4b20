package serviceaccount

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/request"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

type accounts map[string]*corev1.ServiceAccount

func (s accounts) ServiceAccount(_ context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	if sa, ok := s[ns+"/"+name]; ok {
		return sa, nil
	}
	return nil, apierrors.NewNotFound("serviceaccounts", name)
}

func no() *bool { b := false; return &b }

func newPlugin(sas accounts) *Plugin {
	p := New()
	p.generateName = func(prefix string) string { return prefix + "abcde" }
	p.SetServiceAccountGetter(sas)
	return p
}

func admit(t *testing.T, p *Plugin, po *corev1.Pod) error {
	t.Helper()
	k, _ := scheme.ForResource("", "pods")
	a := admission.NewAttributes(admission.Create, k, "", "ns1", po.Metadata.Name, request.User{}, po, nil, false)
	if err := p.Admit(context.Background(), a); err != nil {
		return err
	}
	return p.Validate(context.Background(), a)
}

func newPod() *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "ns1", Name: "web"}, Spec: &corev1.PodSpec{
		InitContainers: []*corev1.Container{{Name: "init", Image: "busybox"}},
		Containers:     []*corev1.Container{{Name: "app", Image: "agnhost"}, {Name: "side", Image: "busybox"}},
	}}
}

func TestDefaultServiceAccountAndTokenVolume(t *testing.T) {
	p := newPlugin(accounts{"ns1/default": {Metadata: &metav1.ObjectMeta{Name: "default"},
		ImagePullSecrets: []*corev1.LocalObjectReference{{Name: "regcred"}}}})
	po := newPod()
	if err := admit(t, p, po); err != nil {
		t.Fatal(err)
	}
	if po.Spec.ServiceAccountName != "default" {
		t.Errorf("serviceAccountName %q, want default", po.Spec.ServiceAccountName)
	}
	if len(po.Spec.Volumes) != 1 {
		t.Fatalf("volumes %v, want one", po.Spec.Volumes)
	}
	v := po.Spec.Volumes[0]
	want := &corev1.Volume{Name: "kube-api-access-abcde", VolumeSource: &corev1.VolumeSource{Projected: TokenVolumeSource()}}
	if !proto.Equal(v, want) {
		t.Errorf("volume\n got %v\nwant %v", v, want)
	}
	// The upstream JSON a user sees in `get -o yaml`.
	b, err := codec.MarshalFields(v)
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, s := range []string{`"expirationSeconds":3607`, `"path":"token"`, `"name":"kube-root-ca.crt"`, `"key":"ca.crt"`, `"fieldPath":"metadata.namespace"`, `"defaultMode":420`} {
		if !strings.Contains(js, s) {
			t.Errorf("projected volume lacks %s:\n%s", s, js)
		}
	}
	for _, c := range append(append([]*corev1.Container(nil), po.Spec.InitContainers...), po.Spec.Containers...) {
		if len(c.VolumeMounts) != 1 || !proto.Equal(c.VolumeMounts[0], &corev1.VolumeMount{Name: "kube-api-access-abcde", ReadOnly: true, MountPath: MountPath}) {
			t.Errorf("container %s mounts %v", c.Name, c.VolumeMounts)
		}
	}
	if len(po.Spec.ImagePullSecrets) != 1 || po.Spec.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("imagePullSecrets %v, want the service account's regcred", po.Spec.ImagePullSecrets)
	}
}

func TestAutomountFalse(t *testing.T) {
	for name, tc := range map[string]struct {
		sa  *corev1.ServiceAccount
		pod func(*corev1.Pod)
		// want a token volume
		want bool
	}{
		"service account says no":            {sa: &corev1.ServiceAccount{AutomountServiceAccountToken: no()}},
		"pod says no":                        {sa: &corev1.ServiceAccount{}, pod: func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = no() }},
		"pod says yes over the account's no": {sa: &corev1.ServiceAccount{AutomountServiceAccountToken: no()}, pod: func(p *corev1.Pod) { y := true; p.Spec.AutomountServiceAccountToken = &y }, want: true},
	} {
		t.Run(name, func(t *testing.T) {
			tc.sa.Metadata = &metav1.ObjectMeta{Name: "default"}
			po := newPod()
			if tc.pod != nil {
				tc.pod(po)
			}
			if err := admit(t, newPlugin(accounts{"ns1/default": tc.sa}), po); err != nil {
				t.Fatal(err)
			}
			if got := len(po.Spec.Volumes) == 1; got != tc.want {
				t.Errorf("token volume added = %v, want %v (volumes %v)", got, tc.want, po.Spec.Volumes)
			}
			if !tc.want && len(po.Spec.Containers[0].VolumeMounts) != 0 {
				t.Errorf("mounts %v, want none", po.Spec.Containers[0].VolumeMounts)
			}
		})
	}
}

func TestExistingMountAndVolumeAreKept(t *testing.T) {
	po := newPod()
	po.Spec.ServiceAccountName = "builder"
	po.Spec.Volumes = []*corev1.Volume{{Name: "mine", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	po.Spec.Containers[0].VolumeMounts = []*corev1.VolumeMount{{Name: "mine", MountPath: MountPath}}
	if err := admit(t, newPlugin(accounts{"ns1/builder": {Metadata: &metav1.ObjectMeta{Name: "builder"}}}), po); err != nil {
		t.Fatal(err)
	}
	if n := len(po.Spec.Containers[0].VolumeMounts); n != 1 || po.Spec.Containers[0].VolumeMounts[0].Name != "mine" {
		t.Errorf("app's own mount at the path was replaced: %v", po.Spec.Containers[0].VolumeMounts)
	}
	if po.Spec.Containers[1].VolumeMounts[0].Name != "kube-api-access-abcde" {
		t.Errorf("side not mounted: %v", po.Spec.Containers[1].VolumeMounts)
	}
	if len(po.Spec.Volumes) != 2 {
		t.Errorf("volumes %v, want mine and the token", po.Spec.Volumes)
	}
}

func TestMissingServiceAccountIsRefused(t *testing.T) {
	for _, name := range []string{"", "builder"} {
		po := newPod()
		po.Spec.ServiceAccountName = name
		err := admit(t, newPlugin(accounts{}), po)
		want := name
		if want == "" {
			want = "default"
		}
		msg := `pods "web" is forbidden: error looking up service account ns1/` + want + `: serviceaccount "` + want + `" not found`
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), msg) {
			t.Errorf("service account %q: err = %v, want Forbidden %q", name, err, msg)
		}
	}
}

func TestMirrorPods(t *testing.T) {
	mirror := func() *corev1.Pod {
		po := newPod()
		po.Metadata.Annotations = map[string]string{mirrorPodAnnotation: "hash"}
		return po
	}
	po := mirror()
	if err := admit(t, newPlugin(accounts{}), po); err != nil {
		t.Fatalf("plain mirror pod: %v", err)
	}
	if po.Spec.ServiceAccountName != "" || len(po.Spec.Volumes) != 0 {
		t.Errorf("mirror pod was given a service account or token: %v", po.Spec)
	}
	for why, mutate := range map[string]func(*corev1.Pod){
		"a mirror pod may not reference service accounts": func(p *corev1.Pod) { p.Spec.ServiceAccountName = "default" },
		"a mirror pod may not reference secrets": func(p *corev1.Pod) {
			p.Spec.Volumes = []*corev1.Volume{{Name: "s", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x"}}}}
		},
		"a mirror pod may not use ServiceAccountToken volume projections": func(p *corev1.Pod) {
			p.Spec.Volumes = []*corev1.Volume{{Name: "t", VolumeSource: &corev1.VolumeSource{Projected: TokenVolumeSource()}}}
		},
	} {
		po := mirror()
		mutate(po)
		if err := admit(t, newPlugin(accounts{}), po); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), why) {
			t.Errorf("err = %v, want Forbidden %q", err, why)
		}
	}
}
