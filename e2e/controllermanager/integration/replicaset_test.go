package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/controller-manager/app"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

func replicaSet(name string, replicas int32) *appsv1.ReplicaSet {
	labels := map[string]string{"app": name}
	return &appsv1.ReplicaSet{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: &appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: &corev1.PodTemplateSpec{
				Metadata: &metav1.ObjectMeta{Labels: labels},
				Spec:     &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/pause:3.10"}}},
			},
		},
	}
}

// podsOf lists the pods labelled app=name, and says which the ReplicaSet
// controls.
func (e *env) podsOf(name string) (all []*corev1.Pod, owned int) {
	e.t.Helper()
	l, err := client.For[*corev1.Pod](e.c, "default").List(e.ctx(), client.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range l.Items {
		if ref := controller.GetControllerOf(p); ref != nil && ref.Kind == "ReplicaSet" && ref.Name == name {
			owned++
		}
	}
	return l.Items, owned
}

// A ReplicaSet makes its pods, with upstream's names, labels and owner;
// deleting it with each propagation policy leaves what upstream leaves.
func TestReplicaSetAndPropagation(t *testing.T) {
	e := setup(t, []string{"replicaset", "garbagecollector"}, app.ControllerOptions{})
	rss := client.For[*appsv1.ReplicaSet](e.c, "default")
	for _, policy := range []string{"Background", "Foreground", "Orphan"} {
		t.Run(policy, func(t *testing.T) {
			name := "web-" + strings.ToLower(policy)
			if _, err := rss.Create(e.ctx(), replicaSet(name, 3)); err != nil {
				t.Fatal(err)
			}
			e.eventually("3 pods of "+name, func() (bool, error) {
				pods, owned := e.podsOf(name)
				return len(pods) == 3 && owned == 3, nil
			})
			pods, _ := e.podsOf(name)
			for _, p := range pods {
				if !strings.HasPrefix(p.Metadata.Name, name+"-") || len(p.Metadata.Name) != len(name)+6 {
					t.Errorf("pod name %q is not %s-<5 random characters>", p.Metadata.Name, name)
				}
			}
			e.eventually("status of "+name, func() (bool, error) {
				rs, err := rss.Get(e.ctx(), name)
				return err == nil && rs.GetStatus().GetReplicas() == 3 && rs.GetStatus().GetObservedGeneration() == rs.Metadata.Generation, err
			})
			if _, err := rss.Delete(e.ctx(), name, client.DeleteOptions{PropagationPolicy: policy}); err != nil {
				t.Fatal(err)
			}
			switch policy {
			case "Background":
				e.eventually("pods of "+name+" collected", func() (bool, error) {
					pods, _ := e.podsOf(name)
					return len(pods) == 0, nil
				})
			case "Foreground":
				// The owner stays, deleting, until its dependents are gone.
				e.eventually(name+" gone after its pods", func() (bool, error) {
					rs, err := rss.Get(e.ctx(), name)
					if apierrors.IsNotFound(err) {
						pods, _ := e.podsOf(name)
						return len(pods) == 0, fmt.Errorf("%s gone while %d pods remain", name, len(pods))
					}
					if err == nil && !slices.Contains(rs.Metadata.Finalizers, "foregroundDeletion") {
						t.Errorf("deleting %s carries finalizers %v, want foregroundDeletion", name, rs.Metadata.Finalizers)
					}
					return false, err
				})
				if pods, _ := e.podsOf(name); len(pods) != 0 {
					t.Errorf("%d pods remain after a foreground deletion", len(pods))
				}
			case "Orphan":
				e.eventually(name+" gone, its pods orphaned", func() (bool, error) {
					_, err := rss.Get(e.ctx(), name)
					pods, owned := e.podsOf(name)
					return apierrors.IsNotFound(err) && len(pods) == 3 && owned == 0, err
				})
				for _, p := range func() []*corev1.Pod { p, _ := e.podsOf(name); return p }() {
					if len(p.Metadata.OwnerReferences) != 0 {
						t.Errorf("orphan %s keeps owner references %v", p.Metadata.Name, p.Metadata.OwnerReferences)
					}
				}
			}
		})
	}
}
