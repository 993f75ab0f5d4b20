package integration

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	ctl "skiff.dev/ctl/app"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
)

// skiffctl runs the CLI in-process against the test's apiserver, as a
// user's shell would.
func (e *env) skiffctl(args ...string) string {
	e.t.Helper()
	var out, errb bytes.Buffer
	code := ctl.Main(ctl.Streams{In: strings.NewReader(""), Out: &out, Err: &errb}, append([]string{"--kubeconfig", e.api.AdminConfig()}, args...))
	if code != 0 {
		e.t.Fatalf("skiffctl %s: exit %d: %s%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String()
}

// replicaSets of the Deployment web: "name=spec/ready" sorted, and the
// revision annotation of each.
func (e *env) replicaSets(deploy string) (sizes map[string]int32, revisions map[string]string) {
	e.t.Helper()
	l, err := client.For[*appsv1.ReplicaSet](e.c, "default").List(e.ctx(), client.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	sizes, revisions = map[string]int32{}, map[string]string{}
	for _, rs := range l.Items {
		if !strings.HasPrefix(rs.Metadata.Name, deploy+"-") {
			continue
		}
		sizes[rs.Metadata.Name] = rs.GetSpec().GetReplicas()
		revisions[rs.Metadata.Name] = rs.Metadata.Annotations["deployment.kubernetes.io/revision"]
	}
	return sizes, revisions
}

// pods lists the pods of "default" the selector picks.
func (e *env) pods(selector string) []*corev1.Pod {
	e.t.Helper()
	l, err := client.For[*corev1.Pod](e.c, "default").List(e.ctx(), client.ListOptions{LabelSelector: selector})
	if err != nil {
		e.t.Fatal(err)
	}
	return l.Items
}

// kubelet plays every node: each pod of the namespace is marked Running and
// Ready as soon as it exists.
func (e *env) kubelet() {
	e.t.Helper()
	pods := client.For[*corev1.Pod](e.c, "default")
	l, err := pods.List(e.ctx(), client.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for i, p := range l.Items {
		ready := false
		for _, c := range p.GetStatus().GetConditions() {
			ready = ready || c.Type == "Ready" && c.Status == "True"
		}
		if !ready && p.Metadata.DeletionTimestamp == nil {
			e.markRunning(p, "n1", fmt.Sprintf("10.244.0.%d", 2+i%250), true)
		}
	}
}

// The flow through skiffctl: create, scale, set image, rollout undo,
// pause; then deletion with each cascade leaves what kubectl's would.
func TestDeploymentThroughSkiffctl(t *testing.T) {
	e := setup(t, []string{"deployment", "replicaset", "garbagecollector"}, app.ControllerOptions{})
	if out := e.skiffctl("create", "deployment", "web", "--image=x", "--replicas=3"); out != "deployment.apps/web created\n" {
		t.Fatalf("create: %q", out)
	}
	var first string
	e.eventually("a ReplicaSet web-<hash> with 3 pods web-<hash>-<5>", func() (bool, error) {
		sizes, revs := e.replicaSets("web")
		pods := e.pods("app=web")
		if len(sizes) != 1 || len(pods) != 3 {
			return false, fmt.Errorf("replica sets %v, pods %d", sizes, len(pods))
		}
		for name := range sizes {
			first = name
		}
		for _, p := range pods {
			hash := p.Metadata.Labels["pod-template-hash"]
			if first != "web-"+hash || !strings.HasPrefix(p.Metadata.Name, first+"-") || len(p.Metadata.Name) != len(first)+6 {
				return false, fmt.Errorf("pod %s labels %v under %s", p.Metadata.Name, p.Metadata.Labels, first)
			}
		}
		return revs[first] == "1", fmt.Errorf("revision %q", revs[first])
	})
	e.kubelet()

	e.skiffctl("scale", "deployment/web", "--replicas=5")
	e.eventually("5 pods after scale", func() (bool, error) {
		sizes, _ := e.replicaSets("web")
		return sizes[first] == 5, fmt.Errorf("sizes %v", sizes)
	})
	e.kubelet()

	e.skiffctl("set", "image", "deployment/web", "x=y")
	var second string
	e.eventually("a rollout to image y", func() (bool, error) {
		e.kubelet()
		sizes, revs := e.replicaSets("web")
		for n, r := range revs {
			if r == "2" {
				second = n
			}
		}
		d, err := client.For[*appsv1.Deployment](e.c, "default").Get(e.ctx(), "web")
		done := err == nil && second != "" && sizes[second] == 5 && sizes[first] == 0 &&
			d.GetStatus().GetUpdatedReplicas() == 5 && d.GetStatus().GetAvailableReplicas() == 5 && d.GetStatus().GetObservedGeneration() == d.Metadata.Generation
		return done, fmt.Errorf("sizes %v revisions %v status %v", sizes, revs, d.GetStatus())
	})
	if out := e.skiffctl("rollout", "status", "deployment/web"); !strings.Contains(out, `deployment "web" successfully rolled out`) {
		t.Errorf("rollout status: %q", out)
	}

	if out := e.skiffctl("rollout", "undo", "deployment/web"); out != "deployment.apps/web rolled back\n" {
		t.Fatalf("undo: %q", out)
	}
	e.eventually("the first ReplicaSet back, as revision 3, and no new one", func() (bool, error) {
		e.kubelet()
		sizes, revs := e.replicaSets("web")
		return len(sizes) == 2 && sizes[first] == 5 && sizes[second] == 0 && revs[first] == "3", fmt.Errorf("sizes %v revisions %v", sizes, revs)
	})
	d, _ := client.For[*appsv1.Deployment](e.c, "default").Get(e.ctx(), "web")
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "x" {
		t.Errorf("after undo the template's image is %q, want x", img)
	}

	// Paused: a template change makes no new ReplicaSet.
	e.skiffctl("rollout", "pause", "deployment/web")
	e.skiffctl("set", "image", "deployment/web", "x=z")
	e.skiffctl("scale", "deployment/web", "--replicas=2")
	e.eventually("a paused deployment only scales", func() (bool, error) {
		sizes, _ := e.replicaSets("web")
		return len(sizes) == 2 && sizes[first] == 2, fmt.Errorf("sizes %v", sizes)
	})
	e.skiffctl("rollout", "resume", "deployment/web")
	e.eventually("resumed, the rollout to z starts", func() (bool, error) {
		e.kubelet()
		sizes, _ := e.replicaSets("web")
		return len(sizes) == 3, fmt.Errorf("sizes %v", sizes)
	})

	// --cascade=orphan keeps the ReplicaSets and pods, ownerless.
	e.skiffctl("delete", "deployment", "web", "--cascade=orphan")
	e.eventually("orphaned ReplicaSets", func() (bool, error) {
		_, err := client.For[*appsv1.Deployment](e.c, "default").Get(e.ctx(), "web")
		l, lerr := client.For[*appsv1.ReplicaSet](e.c, "default").List(e.ctx(), client.ListOptions{})
		if lerr != nil {
			return false, lerr
		}
		if !apierrors.IsNotFound(err) || len(l.Items) != 3 {
			return false, fmt.Errorf("deployment: %v; replica sets %d", err, len(l.Items))
		}
		for _, rs := range l.Items {
			if len(rs.Metadata.OwnerReferences) != 0 {
				return false, fmt.Errorf("%s still owned", rs.Metadata.Name)
			}
		}
		return true, nil
	})

	// foreground and background on fresh deployments.
	for _, cascade := range []string{"foreground", "background"} {
		name := "fg"
		if cascade == "background" {
			name = "bg"
		}
		e.skiffctl("create", "deployment", name, "--image=x", "--replicas=2")
		e.eventually(name+" pods", func() (bool, error) {
			return len(e.pods("app="+name)) == 2, nil
		})
		e.skiffctl("delete", "deployment", name, "--cascade="+cascade)
		e.eventually(name+" and everything under it gone", func() (bool, error) {
			_, err := client.For[*appsv1.Deployment](e.c, "default").Get(e.ctx(), name)
			sizes, _ := e.replicaSets(name)
			pods := e.pods("app=" + name)
			if cascade == "foreground" && apierrors.IsNotFound(err) && (len(sizes) > 0 || len(pods) > 0) {
				t.Errorf("foreground: the Deployment went before its ReplicaSets %v and %d pods", sizes, len(pods))
			}
			return apierrors.IsNotFound(err) && len(sizes) == 0 && len(pods) == 0,
				fmt.Errorf("deployment: %v; replica sets %v; %d pods", err, sizes, len(pods))
		})
	}
}
