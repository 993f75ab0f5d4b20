// Package addons checks manifests/addons/coredns.yaml against Skiff's own
// apiserver: every object decodes strictly and is accepted by its
// validation and admission, and carries what the cluster relies on.
package addons

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	rbacv1 "skiff.dev/proto/api/rbac/v1"
	schedulingv1 "skiff.dev/proto/api/scheduling/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

const manifest = "../../manifests/addons/coredns.yaml"

func readManifest(t *testing.T) []scheme.Object {
	t.Helper()
	f, err := os.Open(filepath.FromSlash(manifest))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Strict, as kubectl's default: a misspelt field is an error, not a
	// field silently dropped.
	docs, err := codec.ReadManifests(f, codec.Options{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []scheme.Object
	for _, d := range docs {
		o, ok := d.Object.(scheme.Object)
		if !ok {
			t.Fatalf("document %d is a %T, not a stored kind", d.Index, d.Object)
		}
		out = append(out, o)
	}
	return out
}

func kindOf(t *testing.T, o scheme.Object) *scheme.Kind {
	t.Helper()
	k, ok := scheme.ForName(o.ProtoReflect().Descriptor().FullName())
	if !ok {
		t.Fatalf("%T is not a kind", o)
	}
	return k
}

func TestAddonApplies(t *testing.T) {
	objs := readManifest(t)
	var got []string
	for _, o := range objs {
		got = append(got, kindOf(t, o).Kind+"/"+o.GetMetadata().GetName())
	}
	want := []string{"ServiceAccount/coredns", "ClusterRole/system:coredns", "ClusterRoleBinding/system:coredns",
		"ConfigMap/coredns", "Deployment/coredns", "Service/kube-dns"}
	if !slices.Equal(got, want) {
		t.Fatalf("the addon holds %v, want %v", got, want)
	}

	srv := apitest.Start(t)
	c := client.New(srv.Conn)
	ctx := context.Background()
	for _, o := range objs {
		k := kindOf(t, o)
		if _, err := c.Resource(k, o.GetMetadata().GetNamespace()).Create(ctx, o, false); err != nil {
			t.Errorf("%s %s: %v", k.Kind, o.GetMetadata().GetName(), err)
		}
	}
	if t.Failed() {
		return
	}

	svc, err := client.For[*corev1.Service](c, "kube-system").Get(ctx, "kube-dns")
	if err != nil {
		t.Fatal(err)
	}
	if svc.GetSpec().GetClusterIP() != "10.96.0.10" || svc.GetMetadata().GetLabels()["k8s-app"] != "kube-dns" ||
		svc.GetSpec().GetSelector()["k8s-app"] != "kube-dns" {
		t.Errorf("kube-dns: clusterIP %q, labels %v, selector %v", svc.GetSpec().GetClusterIP(),
			svc.GetMetadata().GetLabels(), svc.GetSpec().GetSelector())
	}
	var ports []string
	for _, p := range svc.GetSpec().GetPorts() {
		ports = append(ports, p.GetName()+" "+p.GetProtocol())
	}
	if !slices.Equal(ports, []string{"dns UDP", "dns-tcp TCP", "metrics TCP"}) {
		t.Errorf("kube-dns ports %v", ports)
	}

	d, err := client.For[*appsv1.Deployment](c, "kube-system").Get(ctx, "coredns")
	if err != nil {
		t.Fatal(err)
	}
	pod := d.GetSpec().GetTemplate().GetSpec()
	ctr := pod.GetContainers()[0]
	if ctr.GetImage() != "skiff.local/coredns:1.15" || ctr.GetImagePullPolicy() != "IfNotPresent" ||
		!slices.Equal(ctr.GetArgs(), []string{"-conf", "/etc/coredns/Corefile"}) {
		t.Errorf("container image %q pull %q args %v", ctr.GetImage(), ctr.GetImagePullPolicy(), ctr.GetArgs())
	}
	if p := ctr.GetLivenessProbe().GetHandler().GetHttpGet(); p.GetPath() != "/health" || p.GetPort().GetIntVal() != 8080 {
		t.Errorf("liveness probe %v", p)
	}
	if p := ctr.GetReadinessProbe().GetHandler().GetHttpGet(); p.GetPath() != "/ready" || p.GetPort().GetIntVal() != 8181 {
		t.Errorf("readiness probe %v", p)
	}
	if pod.GetDnsPolicy() != "Default" || pod.GetServiceAccountName() != "coredns" {
		t.Errorf("dnsPolicy %q serviceAccountName %q", pod.GetDnsPolicy(), pod.GetServiceAccountName())
	}

	// The role lets the plugin list and watch what it reads.
	role, err := client.For[*rbacv1.ClusterRole](c, "").Get(ctx, "system:coredns")
	if err != nil {
		t.Fatal(err)
	}
	granted := map[string]bool{}
	for _, r := range role.GetRules() {
		for _, g := range r.GetApiGroups() {
			for _, res := range r.GetResources() {
				if slices.Contains(r.GetVerbs(), "list") && slices.Contains(r.GetVerbs(), "watch") {
					granted[g+"/"+res] = true
				}
			}
		}
	}
	for _, res := range []string{"/services", "/namespaces", "/pods", "discovery.k8s.io/endpointslices"} {
		if !granted[res] {
			t.Errorf("system:coredns does not grant list and watch on %s", res)
		}
	}

	// The manifest leaves priorityClassName out because the apiserver has
	// no system-cluster-critical class: once it has one, use it.
	_, err = client.For[*schedulingv1.PriorityClass](c, "").Get(ctx, "system-cluster-critical")
	switch {
	case err == nil:
		if pod.GetPriorityClassName() != "system-cluster-critical" {
			t.Error("the apiserver serves PriorityClass system-cluster-critical: give the coredns pods priorityClassName system-cluster-critical, as upstream")
		}
	case !apierrors.IsNotFound(err):
		t.Fatal(err)
	case pod.GetPriorityClassName() != "":
		t.Errorf("priorityClassName %q names a class the apiserver does not have", pod.GetPriorityClassName())
	}
}

func TestCorefileStaysOnTheMachine(t *testing.T) {
	var corefile string
	for _, o := range readManifest(t) {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			corefile = cm.GetData()["Corefile"]
		}
	}
	if !strings.Contains(corefile, "skiff cluster.local in-addr.arpa ip6.arpa {") {
		t.Errorf("the Corefile does not serve cluster.local with skiff:\n%s", corefile)
	}
	for _, line := range strings.Split(corefile, "\n") {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "forward" || f[0] == "grpc") {
			t.Errorf("the Corefile sends queries away from this machine: %q", line)
		}
	}
}
