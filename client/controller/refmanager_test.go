package controller

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// patchRecorder keeps the patch bodies the client sends.
type patchRecorder struct {
	apipb.APIClient
	mu      sync.Mutex
	patches map[string][]byte // by object name
}

func (r *patchRecorder) Patch(ctx context.Context, in *apipb.PatchRequest, opts ...grpc.CallOption) (*anypb.Any, error) {
	r.mu.Lock()
	r.patches[in.GetName()] = in.GetPatch()
	r.mu.Unlock()
	return r.APIClient.Patch(ctx, in, opts...)
}

func (r *patchRecorder) get(name string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.patches[name]
	return p, ok
}

var (
	yes = true
	no  = false
)

func ownerRef(uid string) *metav1.OwnerReference {
	return &metav1.OwnerReference{ApiVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", Uid: uid, Controller: &yes, BlockOwnerDeletion: &yes}
}

var configMapRef = &metav1.OwnerReference{ApiVersion: "v1", Kind: "ConfigMap", Name: "cm", Uid: "cm-uid", Controller: &no}

func pod(name, ns, app string, refs ...*metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name, Uid: name + "-uid",
		Labels: map[string]string{"app": app}, OwnerReferences: refs}}
}

func replicaSet(uid string) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web", Uid: uid}}
}

func deleting[T scheme.Object](o T) T {
	m := o.GetMetadata()
	m.DeletionTimestamp = metav1.Now()
	m.Finalizers = []string{"example.com/hold"}
	return o
}

func podKind(t testing.TB) *scheme.Kind {
	k, ok := scheme.ForResource("", "pods")
	if !ok {
		t.Fatal("no pods kind")
	}
	return k
}

// stored reads every object back from the fake, so that what the claim sees
// carries the resourceVersions the server gave them.
func stored(t *testing.T, cs *fake.Clientset, objs []scheme.Object) []scheme.Object {
	t.Helper()
	out := make([]scheme.Object, len(objs))
	for i, o := range objs {
		k, _ := scheme.ForMessage(o)
		got, err := cs.Tracker().Get(k, o.GetMetadata().GetNamespace(), o.GetMetadata().GetName())
		if err != nil {
			t.Fatal(err)
		}
		out[i] = got
	}
	return out
}

func names(objs []scheme.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetMetadata().GetName())
	}
	slices.Sort(out)
	return out
}

func refUIDs(o scheme.Object) []string {
	var out []string
	for _, r := range o.GetMetadata().GetOwnerReferences() {
		s := r.GetUid()
		if r.GetController() {
			s += "(controller)"
		}
		out = append(out, s)
	}
	return out
}

func TestClaimObjects(t *testing.T) {
	for _, tc := range []struct {
		name string
		// owner is the ReplicaSet as the controller's cache has it; stored,
		// when set, is the one the apiserver has.
		owner, stored *appsv1.ReplicaSet
		pods          []*corev1.Pod
		wantClaimed   []string
		wantErr       string
		// wantRefs are the owner reference UIDs each pod has afterwards.
		wantRefs    map[string][]string
		wantPatched []string
		wantGets    int // fresh Gets of the owner
	}{
		{
			name:        "adopts a matching orphan",
			owner:       replicaSet("rs-uid"),
			pods:        []*corev1.Pod{pod("orphan", "default", "web")},
			wantClaimed: []string{"orphan"},
			wantRefs:    map[string][]string{"orphan": {"rs-uid(controller)"}},
			wantPatched: []string{"orphan"},
			wantGets:    1,
		},
		{
			name:        "adoption keeps the orphan's other owners",
			owner:       replicaSet("rs-uid"),
			pods:        []*corev1.Pod{pod("orphan", "default", "web", configMapRef)},
			wantClaimed: []string{"orphan"},
			wantRefs:    map[string][]string{"orphan": {"cm-uid", "rs-uid(controller)"}},
			wantPatched: []string{"orphan"},
			wantGets:    1,
		},
		{
			name:     "skips an orphan that does not match",
			owner:    replicaSet("rs-uid"),
			pods:     []*corev1.Pod{pod("db", "default", "db")},
			wantRefs: map[string][]string{"db": nil},
		},
		{
			name:     "skips an orphan being deleted",
			owner:    replicaSet("rs-uid"),
			pods:     []*corev1.Pod{deleting(pod("going", "default", "web"))},
			wantRefs: map[string][]string{"going": nil},
		},
		{
			name:     "skips an orphan in another namespace",
			owner:    replicaSet("rs-uid"),
			pods:     []*corev1.Pod{pod("elsewhere", "other", "web")},
			wantRefs: map[string][]string{"elsewhere": nil},
		},
		{
			name:        "keeps an owned object that matches",
			owner:       replicaSet("rs-uid"),
			pods:        []*corev1.Pod{pod("mine", "default", "web", ownerRef("rs-uid"))},
			wantClaimed: []string{"mine"},
			wantRefs:    map[string][]string{"mine": {"rs-uid(controller)"}},
		},
		{
			name:        "releases an owned object that no longer matches",
			owner:       replicaSet("rs-uid"),
			pods:        []*corev1.Pod{pod("relabelled", "default", "db", configMapRef, ownerRef("rs-uid"))},
			wantRefs:    map[string][]string{"relabelled": {"cm-uid"}},
			wantPatched: []string{"relabelled"},
		},
		{
			name:     "ignores objects controlled by another owner",
			owner:    replicaSet("rs-uid"),
			pods:     []*corev1.Pod{pod("theirs", "default", "web", ownerRef("other-uid")), pod("theirs-db", "default", "db", ownerRef("other-uid"))},
			wantRefs: map[string][]string{"theirs": {"other-uid(controller)"}, "theirs-db": {"other-uid(controller)"}},
		},
		{
			name:  "an owner being deleted adopts and releases nothing",
			owner: deleting(replicaSet("rs-uid")),
			pods: []*corev1.Pod{pod("orphan", "default", "web"), pod("mine", "default", "web", ownerRef("rs-uid")),
				pod("relabelled", "default", "db", ownerRef("rs-uid"))},
			wantClaimed: []string{"mine"},
			wantRefs: map[string][]string{"orphan": nil, "mine": {"rs-uid(controller)"},
				"relabelled": {"rs-uid(controller)"}},
		},
		{
			name:     "no adoption when the stored owner is being deleted",
			owner:    replicaSet("rs-uid"),
			stored:   deleting(replicaSet("rs-uid")),
			pods:     []*corev1.Pod{pod("orphan-a", "default", "web"), pod("orphan-b", "default", "web")},
			wantErr:  "has just been deleted",
			wantRefs: map[string][]string{"orphan-a": nil, "orphan-b": nil},
			wantGets: 1,
		},
		{
			name:     "no adoption when the owner was recreated with another UID",
			owner:    replicaSet("rs-uid"),
			stored:   replicaSet("new-uid"),
			pods:     []*corev1.Pod{pod("orphan-a", "default", "web"), pod("orphan-b", "default", "web")},
			wantErr:  "is gone: got uid new-uid, wanted rs-uid",
			wantRefs: map[string][]string{"orphan-a": nil, "orphan-b": nil},
			wantGets: 1,
		},
		{
			name:        "mixed, with the owner read once",
			owner:       replicaSet("rs-uid"),
			pods:        []*corev1.Pod{pod("orphan-a", "default", "web"), pod("orphan-b", "default", "web"), pod("mine", "default", "web", ownerRef("rs-uid"))},
			wantClaimed: []string{"mine", "orphan-a", "orphan-b"},
			wantPatched: []string{"orphan-a", "orphan-b"},
			wantGets:    1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storedOwner := tc.stored
			if storedOwner == nil {
				storedOwner = tc.owner
			}
			objs := []scheme.Object{storedOwner}
			for _, p := range tc.pods {
				objs = append(objs, p)
			}
			cs := fake.NewClientset(objs...)
			defer cs.Close()
			rec := &patchRecorder{APIClient: cs.Client.API, patches: map[string][]byte{}}
			c := &client.Client{API: rec}
			seen := stored(t, cs, objs[1:])
			cs.ClearActions()

			m := NewRefManager(c, tc.owner, rsKind(t), labels.SelectorFromSet(labels.Set{"app": "web"}), nil)
			claimed, err := m.ClaimObjects(context.Background(), seen, podKind(t))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ClaimObjects: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("ClaimObjects error = %v, want one saying %q", err, tc.wantErr)
			}
			if got := names(claimed); !slices.Equal(got, tc.wantClaimed) {
				t.Errorf("claimed %v, want %v", got, tc.wantClaimed)
			}
			for name, want := range tc.wantRefs {
				ns := "default"
				if name == "elsewhere" {
					ns = "other"
				}
				got, err := cs.Tracker().Get(podKind(t), ns, name)
				if err != nil {
					t.Fatal(err)
				}
				if refs := refUIDs(got); !slices.Equal(refs, want) {
					t.Errorf("%s has owner references %v, want %v", name, refs, want)
				}
			}
			var patched []string
			gets := 0
			for _, a := range cs.Actions() {
				switch {
				case a.Verb == "patch" && a.Resource == "pods":
					patched = append(patched, a.Name)
				case a.Verb == "get" && a.Resource == "replicasets":
					gets++
				}
			}
			slices.Sort(patched)
			if !slices.Equal(patched, tc.wantPatched) {
				t.Errorf("patched %v, want %v", patched, tc.wantPatched)
			}
			if gets != tc.wantGets {
				t.Errorf("the owner was read %d times, want %d", gets, tc.wantGets)
			}
			// Every patch is pinned to the object as the claim saw it.
			for _, o := range seen {
				body, ok := rec.get(o.GetMetadata().GetName())
				if !ok {
					continue
				}
				var p struct {
					Metadata struct{ UID, ResourceVersion string }
				}
				if err := json.Unmarshal(body, &p); err != nil {
					t.Fatal(err)
				}
				if p.Metadata.UID != o.GetMetadata().GetUid() || p.Metadata.ResourceVersion != o.GetMetadata().GetResourceVersion() {
					t.Errorf("patch of %s = %s, want uid %s and resourceVersion %s as preconditions", o.GetMetadata().GetName(), body,
						o.GetMetadata().GetUid(), o.GetMetadata().GetResourceVersion())
				}
			}
		})
	}
}

// A claim decided on a stale copy must not overwrite what changed since.
func TestClaimObjectsStaleObjectConflicts(t *testing.T) {
	ctx := context.Background()
	owner := replicaSet("rs-uid")
	cs := fake.NewClientset(owner, pod("orphan", "default", "web"), pod("mine", "default", "db", ownerRef("rs-uid")))
	defer cs.Close()
	seen := stored(t, cs, []scheme.Object{pod("orphan", "default", "web"), pod("mine", "default", "db")})

	// Meanwhile another owner adopts the orphan, and "mine" gains a second owner.
	pods := client.For[*corev1.Pod](cs.Client, "default")
	for name, ref := range map[string]*metav1.OwnerReference{"orphan": ownerRef("other-uid"), "mine": configMapRef} {
		p, err := pods.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		p.Metadata.OwnerReferences = append(p.Metadata.OwnerReferences, ref)
		if _, err := pods.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	m := NewRefManager(cs.Client, owner, rsKind(t), labels.SelectorFromSet(labels.Set{"app": "web"}), nil)
	claimed, err := m.ClaimObjects(ctx, seen, podKind(t))
	if !apierrors.IsConflict(err) {
		t.Fatalf("ClaimObjects error = %v, want Conflict", err)
	}
	if len(claimed) != 0 {
		t.Errorf("claimed %v, want nothing", names(claimed))
	}
	for name, want := range map[string][]string{"orphan": {"other-uid(controller)"}, "mine": {"rs-uid(controller)", "cm-uid"}} {
		got, _ := cs.Tracker().Get(podKind(t), "default", name)
		if refs := refUIDs(got); !slices.Equal(refs, want) {
			t.Errorf("%s has owner references %v, want %v (unchanged by the stale claim)", name, refs, want)
		}
	}
}

// Releasing an object that is gone, or was recreated under its name, is done.
func TestReleaseOfGoneObjectSucceeds(t *testing.T) {
	ctx := context.Background()
	owner := replicaSet("rs-uid")
	cs := fake.NewClientset(owner, pod("deleted", "default", "db", ownerRef("rs-uid")), pod("recreated", "default", "db", ownerRef("rs-uid")))
	defer cs.Close()
	seen := stored(t, cs, []scheme.Object{pod("deleted", "default", "db"), pod("recreated", "default", "db")})

	pods := client.For[*corev1.Pod](cs.Client, "default")
	for _, name := range []string{"deleted", "recreated"} {
		if _, err := pods.Delete(ctx, name, client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pods.Create(ctx, pod("recreated", "default", "db", ownerRef("rs-uid"))); err != nil {
		t.Fatal(err)
	}

	m := NewRefManager(cs.Client, owner, rsKind(t), labels.SelectorFromSet(labels.Set{"app": "web"}), nil)
	if _, err := m.ClaimObjects(ctx, seen, podKind(t)); err != nil {
		t.Fatalf("ClaimObjects: %v", err)
	}
	got, err := pods.Get(ctx, "recreated")
	if err != nil {
		t.Fatal(err)
	}
	if refs := refUIDs(got); !slices.Equal(refs, []string{"rs-uid(controller)"}) {
		t.Errorf("the recreated pod's references became %v; the release was meant for its predecessor", refs)
	}
}

func TestClaimTyped(t *testing.T) {
	ctx := context.Background()
	owner := replicaSet("rs-uid")
	cs := fake.NewClientset(owner, pod("a", "default", "web"), pod("b", "default", "web"))
	defer cs.Close()
	l, err := client.For[*corev1.Pod](cs.Client, "default").List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	canAdoptCalls := 0
	m := NewRefManager(cs.Client, owner, rsKind(t), labels.SelectorFromSet(labels.Set{"app": "web"}),
		func(context.Context) error { canAdoptCalls++; return nil })
	claimed, err := Claim(ctx, m, l.Items, func(p *corev1.Pod) bool { return p.Metadata.Name != "b" })
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 1 || claimed[0].Metadata.Name != "a" {
		t.Errorf("claimed %v, want [a] (b filtered out)", claimed)
	}
	if canAdoptCalls != 1 {
		t.Errorf("canAdopt ran %d times, want 1", canAdoptCalls)
	}
}
