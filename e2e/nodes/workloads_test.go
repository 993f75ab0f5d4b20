package nodes

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/client"
	appsv1 "skiff.dev/proto/api/apps/v1"
	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
)

// busybox is a container of our busybox image running script.
func busybox(script string) *corev1.Container {
	return &corev1.Container{Name: "c", Image: "skiff.local/busybox:1.35", Command: []string{"sh", "-c", script}}
}

// jobPods lists the pods of Job name by phase.
func jobPods(ctx context.Context, cl *client.Client, ns, name string) (map[string][]*corev1.Pod, error) {
	l, err := client.For[*corev1.Pod](cl, ns).List(ctx, client.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + name})
	if err != nil {
		return nil, err
	}
	out := map[string][]*corev1.Pod{}
	for _, p := range l.Items {
		out[p.GetStatus().GetPhase()] = append(out[p.GetStatus().GetPhase()], p)
	}
	return out, nil
}

func jobCondition(j *batchv1.Job, typ string) string {
	for _, c := range j.GetStatus().GetConditions() {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

func podLog(ctx context.Context, cl *client.Client, ns, name string) (string, error) {
	r, err := cl.PodLogs(ctx, ns, name, client.LogOptions{})
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return string(b), err
}

// The workload kinds of the documentation on two real nodes, each as a
// user would check it: Jobs finish with exactly their completions even
// when the controller-manager dies on the way, Indexed pods see their
// index, a CronJob starts Jobs and keeps its history, a DaemonSet follows
// the nodes it selects, a quota refuses the pod beyond it, and concurrent
// evictions never take a budget below its floor.
func TestWorkloads(t *testing.T) {
	c, cl := kubeletClusterN(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	jobs := client.For[*batchv1.Job](cl, "default")

	// The CronJob runs every minute from the start; its history is checked
	// last, once two of its Jobs have run.
	cronjobs := client.For[*batchv1.CronJob](cl, "default")
	if _, err := cronjobs.Create(ctx, &batchv1.CronJob{Metadata: &metav1.ObjectMeta{Name: "tick"}, Spec: &batchv1.CronJobSpec{
		Schedule: "* * * * *", SuccessfulJobsHistoryLimit: new(int32(1)),
		JobTemplate: &batchv1.JobTemplateSpec{Spec: &batchv1.JobSpec{Template: &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{
			RestartPolicy: "Never", Containers: []*corev1.Container{busybox("date")}}}}}}}); err != nil {
		t.Fatal(err)
	}

	t.Run("a Job of 10 completions survives a controller-manager crash", func(t *testing.T) {
		if _, err := jobs.Create(ctx, &batchv1.Job{Metadata: &metav1.ObjectMeta{Name: "ten"}, Spec: &batchv1.JobSpec{
			Completions: new(int32(10)), Parallelism: new(int32(3)),
			Template: &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{RestartPolicy: "Never", Containers: []*corev1.Container{busybox("sleep 1")}}}}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "three pods of ten succeeded", func() (bool, string) {
			ps, err := jobPods(ctx, cl, "default", "ten")
			return err == nil && len(ps["Succeeded"]) >= 3, fmt.Sprint(len(ps["Succeeded"]), err)
		})
		if err := c.Kill("skiff-controller-manager"); err != nil {
			t.Fatal(err)
		}
		// Pods finish while nobody counts them.
		time.Sleep(3 * time.Second)
		if err := c.Start(ctx, "skiff-controller-manager"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*time.Minute, "ten Complete", func() (bool, string) {
			j, err := jobs.Get(ctx, "ten")
			return err == nil && jobCondition(j, "Complete") == "True", fmt.Sprint(j.GetStatus(), err)
		})
		j, _ := jobs.Get(ctx, "ten")
		ps, err := jobPods(ctx, cl, "default", "ten")
		if err != nil {
			t.Fatal(err)
		}
		if st := j.GetStatus(); st.GetSucceeded() != 10 || st.GetFailed() != 0 || len(ps["Succeeded"]) != 10 {
			t.Errorf("succeeded %d, failed %d, %d pods Succeeded; want exactly 10, 0, 10", st.GetSucceeded(), st.GetFailed(), len(ps["Succeeded"]))
		}
		for _, p := range ps["Succeeded"] {
			if slices.Contains(p.Metadata.Finalizers, "batch.kubernetes.io/job-tracking") {
				t.Errorf("%s still has the job-tracking finalizer", p.Metadata.Name)
			}
		}
	})

	t.Run("each pod of an Indexed Job sees its index", func(t *testing.T) {
		if _, err := jobs.Create(ctx, &batchv1.Job{Metadata: &metav1.ObjectMeta{Name: "indexed"}, Spec: &batchv1.JobSpec{
			Completions: new(int32(3)), Parallelism: new(int32(3)), CompletionMode: new("Indexed"),
			Template: &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{RestartPolicy: "Never",
				Containers: []*corev1.Container{busybox(`echo "index=$JOB_COMPLETION_INDEX host=$(hostname)"`)}}}}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "indexed Complete", func() (bool, string) {
			j, err := jobs.Get(ctx, "indexed")
			return err == nil && jobCondition(j, "Complete") == "True", fmt.Sprint(j.GetStatus(), err)
		})
		j, _ := jobs.Get(ctx, "indexed")
		if got := j.GetStatus().GetCompletedIndexes(); got != "0-2" {
			t.Errorf("completedIndexes %q, want 0-2", got)
		}
		ps, _ := jobPods(ctx, cl, "default", "indexed")
		var seen []string
		for _, p := range ps["Succeeded"] {
			idx := p.Metadata.Annotations["batch.kubernetes.io/job-completion-index"]
			out, err := podLog(ctx, cl, "default", p.Metadata.Name)
			if want := fmt.Sprintf("index=%s host=indexed-%s", idx, idx); err != nil || strings.TrimSpace(out) != want {
				t.Errorf("%s printed %q (%v), want %q", p.Metadata.Name, out, err, want)
			}
			seen = append(seen, idx)
		}
		slices.Sort(seen)
		if !slices.Equal(seen, []string{"0", "1", "2"}) {
			t.Errorf("indexes %v, want 0, 1, 2 once each", seen)
		}
	})

	t.Run("a DaemonSet follows the nodes it selects", func(t *testing.T) {
		nodes := client.For[*corev1.Node](cl, "")
		label := func(name string) {
			t.Helper()
			for range 10 {
				n, err := nodes.Get(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				n.Metadata.Labels["skiff.dev/agent"] = "yes"
				if _, err = nodes.Update(ctx, n); err == nil {
					return
				} else if !apierrors.IsConflict(err) {
					t.Fatal(err)
				}
			}
			t.Fatalf("labelling %s: conflicts", name)
		}
		label(c.Nodes[0].Name)
		labels := map[string]string{"app": "agent"}
		if _, err := client.For[*appsv1.DaemonSet](cl, "default").Create(ctx, &appsv1.DaemonSet{Metadata: &metav1.ObjectMeta{Name: "agent"},
			Spec: &appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: &corev1.PodTemplateSpec{
				Metadata: &metav1.ObjectMeta{Labels: labels}, Spec: &corev1.PodSpec{NodeSelector: map[string]string{"skiff.dev/agent": "yes"},
					Containers: []*corev1.Container{{Name: "agent", Image: "skiff.local/agnhost:2.53", Args: []string{"pause"}}}}}}}); err != nil {
			t.Fatal(err)
		}
		onNodes := func(want ...string) func() (bool, string) {
			return func() (bool, string) {
				l, err := client.For[*corev1.Pod](cl, "default").List(ctx, client.ListOptions{LabelSelector: "app=agent"})
				if err != nil {
					return false, err.Error()
				}
				var on []string
				for _, p := range l.Items {
					if p.GetStatus().GetPhase() == "Running" && p.Metadata.DeletionTimestamp == nil {
						on = append(on, p.Spec.NodeName)
					}
				}
				slices.Sort(on)
				return slices.Equal(on, want), fmt.Sprintf("running on %v, want %v", on, want)
			}
		}
		eventually(t, time.Minute, "the agent on the labelled node only", onNodes(c.Nodes[0].Name))
		label(c.Nodes[1].Name)
		eventually(t, time.Minute, "the agent on both nodes", onNodes(c.Nodes[0].Name, c.Nodes[1].Name))
		eventually(t, 30*time.Second, "status counting both", func() (bool, string) {
			ds, err := client.For[*appsv1.DaemonSet](cl, "default").Get(ctx, "agent")
			st := ds.GetStatus()
			return err == nil && st.GetDesiredNumberScheduled() == 2 && st.GetNumberReady() == 2, fmt.Sprint(st, err)
		})
	})

	t.Run("a quota refuses the pod beyond it", func(t *testing.T) {
		if _, err := client.For[*corev1.Namespace](cl, "").Create(ctx, &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: "small"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.For[*corev1.ResourceQuota](cl, "small").Create(ctx, &corev1.ResourceQuota{Metadata: &metav1.ObjectMeta{Name: "two"},
			Spec: &corev1.ResourceQuotaSpec{Hard: map[string]*metav1.Quantity{"pods": {String_: "2"}}}}); err != nil {
			t.Fatal(err)
		}
		// Admission enforces a quota once the controller has counted it.
		eventually(t, 30*time.Second, "the quota counted", func() (bool, string) {
			q, err := client.For[*corev1.ResourceQuota](cl, "small").Get(ctx, "two")
			return err == nil && q.GetStatus().GetUsed()["pods"] != nil, fmt.Sprint(q.GetStatus(), err)
		})
		pods := client.For[*corev1.Pod](cl, "small")
		for i := range 2 {
			if _, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p" + strconv.Itoa(i)},
				Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/agnhost:2.53", Args: []string{"pause"}}}}}); err != nil {
				t.Fatalf("pod %d of 2: %v", i, err)
			}
		}
		_, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p2"},
			Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/agnhost:2.53", Args: []string{"pause"}}}}})
		if want := "exceeded quota: two, requested: pods=1, used: pods=2, limited: pods=2"; err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("the third pod: %v, want Forbidden with %q", err, want)
		}
	})

	t.Run("concurrent evictions never break a budget", func(t *testing.T) {
		labels := map[string]string{"app": "guarded"}
		if _, err := client.For[*appsv1.Deployment](cl, "default").Create(ctx, &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Name: "guarded"},
			Spec: &appsv1.DeploymentSpec{Replicas: new(int32(4)), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels}, Spec: &corev1.PodSpec{
					Containers: []*corev1.Container{agnhost("web")}}}}}); err != nil {
			t.Fatal(err)
		}
		two := &metav1.IntOrString{IntVal: 2}
		if _, err := client.For[*policyv1.PodDisruptionBudget](cl, "default").Create(ctx, &policyv1.PodDisruptionBudget{
			Metadata: &metav1.ObjectMeta{Name: "guarded"}, Spec: &policyv1.PodDisruptionBudgetSpec{MinAvailable: two,
				Selector: &metav1.LabelSelector{MatchLabels: labels}}}); err != nil {
			t.Fatal(err)
		}
		var names []string
		eventually(t, 90*time.Second, "four ready pods and the budget allowing two", func() (bool, string) {
			l, err := client.For[*corev1.Pod](cl, "default").List(ctx, client.ListOptions{LabelSelector: "app=guarded"})
			if err != nil {
				return false, err.Error()
			}
			names = nil
			for _, p := range l.Items {
				if condition(p, "Ready") == "True" {
					names = append(names, p.Metadata.Name)
				}
			}
			pdb, err := client.For[*policyv1.PodDisruptionBudget](cl, "default").Get(ctx, "guarded")
			return err == nil && len(names) == 4 && pdb.GetStatus().GetDisruptionsAllowed() == 2,
				fmt.Sprintf("%d ready, budget %v (%v)", len(names), pdb.GetStatus(), err)
		})
		var wg sync.WaitGroup
		errs := make([]error, len(names))
		for i, name := range names {
			wg.Go(func() {
				errs[i] = cl.Evict(ctx, &policyv1.Eviction{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name}})
			})
		}
		wg.Wait()
		evicted := 0
		for i, err := range errs {
			switch {
			case err == nil:
				evicted++
			case !apierrors.IsTooManyRequests(err):
				t.Errorf("evicting %s: %v, want success or 429", names[i], err)
			}
		}
		if evicted != 2 {
			t.Errorf("%d of 4 concurrent evictions went through, want exactly the 2 the budget allows", evicted)
		}
	})

	t.Run("an HPA scales a Deployment up under load and back down", func(t *testing.T) {
		labels := map[string]string{"run": "php-apache"}
		consumer := &corev1.Container{Name: "php-apache", Image: "skiff.local/agnhost:2.53", Args: []string{"resource-consumer", "--port=8080"},
			Resources: &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{"cpu": {String_: "200m"}},
				Limits: map[string]*metav1.Quantity{"cpu": {String_: "500m"}}}}
		deployments := client.For[*appsv1.Deployment](cl, "default")
		if _, err := deployments.Create(ctx, &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Name: "php-apache"},
			Spec: &appsv1.DeploymentSpec{Replicas: new(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels}, Spec: &corev1.PodSpec{
					NodeName: c.Nodes[0].Name, Containers: []*corev1.Container{consumer}}}}}); err != nil {
			t.Fatal(err)
		}
		// Scale-down waits 15 s instead of upstream's 5 minutes.
		if _, err := client.For[*autoscalingv2.HorizontalPodAutoscaler](cl, "default").Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
			Metadata: &metav1.ObjectMeta{Name: "php-apache"}, Spec: &autoscalingv2.HorizontalPodAutoscalerSpec{
				ScaleTargetRef: &autoscalingv2.CrossVersionObjectReference{ApiVersion: "apps/v1", Kind: "Deployment", Name: "php-apache"},
				MinReplicas:    new(int32(1)), MaxReplicas: 3,
				Metrics: []*autoscalingv2.MetricSpec{{Type: "Resource", Resource: &autoscalingv2.ResourceMetricSource{Name: "cpu",
					Target: &autoscalingv2.MetricTarget{Type: "Utilization", AverageUtilization: new(int32(50))}}}},
				Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: new(int32(15))}}}}); err != nil {
			t.Fatal(err)
		}
		var ip string
		eventually(t, time.Minute, "the consumer running", func() (bool, string) {
			l, err := client.For[*corev1.Pod](cl, "default").List(ctx, client.ListOptions{LabelSelector: "run=php-apache"})
			if err != nil || len(l.Items) != 1 || l.Items[0].GetStatus().GetPhase() != "Running" {
				return false, fmt.Sprint(l, err)
			}
			ip = l.Items[0].Status.PodIP
			return true, ""
		})
		// 300 millicores of a 200m request: 150 % against a 50 % target.
		// One request from the host to the pod, bounded to 60 s of load.
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Post("http://"+net.JoinHostPort(ip, "8080")+"/ConsumeCPU?millicores=300&durationSec=60", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("ConsumeCPU: %s", resp.Status)
		}
		replicas := func(want func(int32) bool, what string) {
			t.Helper()
			eventually(t, 3*time.Minute, what, func() (bool, string) {
				h, err := client.For[*autoscalingv2.HorizontalPodAutoscaler](cl, "default").Get(ctx, "php-apache")
				d, err2 := deployments.Get(ctx, "php-apache")
				if err != nil || err2 != nil {
					return false, fmt.Sprint(err, err2)
				}
				return want(d.Spec.GetReplicas()), fmt.Sprintf("deployment at %d; hpa %v", d.Spec.GetReplicas(), h.GetStatus())
			})
		}
		replicas(func(n int32) bool { return n >= 2 }, "scaled up under load")
		replicas(func(n int32) bool { return n == 1 }, "scaled back to 1 once the load ended")
	})

	t.Run("a CronJob starts a Job every minute and keeps its history", func(t *testing.T) {
		// Every Job of tick ever seen complete: two runs must have finished,
		// and the history limit of 1 keeps only the newest.
		finished := map[string]bool{}
		eventually(t, 3*time.Minute, "two Jobs of tick run, one kept", func() (bool, string) {
			l, err := jobs.List(ctx, client.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			var kept []string
			for _, j := range l.Items {
				if r := metav1.GetControllerOf(j.Metadata); r != nil && r.Name == "tick" && jobCondition(j, "Complete") == "True" {
					finished[j.Metadata.Name] = true
					kept = append(kept, j.Metadata.Name)
				}
			}
			return len(finished) >= 2 && len(kept) == 1, fmt.Sprintf("finished %v, kept %v", finished, kept)
		})
		cj, err := cronjobs.Get(ctx, "tick")
		if err != nil || cj.GetStatus().GetLastScheduleTime() == nil || cj.GetStatus().GetLastSuccessfulTime() == nil {
			t.Errorf("tick's status: %v (%v), want lastScheduleTime and lastSuccessfulTime", cj.GetStatus(), err)
		}
	})
}
