package controller

import (
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func TestSplitMetaNamespaceKey(t *testing.T) {
	for _, tc := range []struct {
		key, ns, name, err string
	}{
		{key: "default/web-0", ns: "default", name: "web-0"},
		{key: "node-1", name: "node-1"},
		{key: "/web-0", name: "web-0"},
		{key: "", name: ""},
		{key: "a/b/c", err: `unexpected key format: "a/b/c"`},
	} {
		ns, name, err := SplitMetaNamespaceKey(tc.key)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("SplitMetaNamespaceKey(%q) error = %v, want %q", tc.key, err, tc.err)
			}
			continue
		}
		if err != nil || ns != tc.ns || name != tc.name {
			t.Errorf("SplitMetaNamespaceKey(%q) = %q, %q, %v; want %q, %q", tc.key, ns, name, err, tc.ns, tc.name)
		}
	}
}

func TestKeyFuncRoundTrips(t *testing.T) {
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web-0"}}
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-1"}}
	if k := KeyFunc(pod); k != "default/web-0" {
		t.Errorf("KeyFunc(pod) = %q", k)
	}
	if k := KeyFunc(node); k != "node-1" {
		t.Errorf("KeyFunc(node) = %q", k)
	}
	ns, name, err := SplitMetaNamespaceKey(KeyFunc(pod))
	if err != nil || ns != "default" || name != "web-0" {
		t.Errorf("split of pod key = %q, %q, %v", ns, name, err)
	}
}
