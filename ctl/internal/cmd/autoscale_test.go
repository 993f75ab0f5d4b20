package cmd

import (
	"strings"
	"testing"

	"skiff.dev/proto/scheme"
)

func TestAutoscaleGeneratesAnHPA(t *testing.T) {
	k, name, err := autoscaleTarget([]string{"deployment/web"})
	if err != nil {
		t.Fatal(err)
	}
	f := autoscaleFlags{min: 2, max: 10, cpuPercent: 50}
	hpa, err := f.generate(k, name, "default")
	if err != nil {
		t.Fatal(err)
	}
	ref := hpa.GetSpec().GetScaleTargetRef()
	if hpa.GetMetadata().GetName() != "web" || ref.GetApiVersion() != "apps/v1" || ref.GetKind() != "Deployment" || ref.GetName() != "web" {
		t.Errorf("HPA %s targets %s %s %s, want web → apps/v1 Deployment web", hpa.GetMetadata().GetName(), ref.GetApiVersion(), ref.GetKind(), ref.GetName())
	}
	if hpa.GetSpec().GetMinReplicas() != 2 || hpa.GetSpec().GetMaxReplicas() != 10 {
		t.Errorf("min/max = %d/%d, want 2/10", hpa.GetSpec().GetMinReplicas(), hpa.GetSpec().GetMaxReplicas())
	}
	m := hpa.GetSpec().GetMetrics()
	if len(m) != 1 || m[0].GetType() != "Resource" || m[0].GetResource().GetName() != "cpu" ||
		m[0].GetResource().GetTarget().GetType() != "Utilization" || m[0].GetResource().GetTarget().GetAverageUtilization() != 50 {
		t.Errorf("metrics = %v, want cpu Utilization 50", m)
	}

	f = autoscaleFlags{min: -1, max: 3, cpuPercent: -1, cpu: "70%"}
	hpa, err = f.generate(k, name, "default")
	if err != nil {
		t.Fatal(err)
	}
	if hpa.GetSpec().MinReplicas != nil || hpa.GetSpec().GetMetrics()[0].GetResource().GetTarget().GetAverageUtilization() != 70 {
		t.Errorf("--cpu=70%% without --min: %v", hpa.GetSpec())
	}
	f = autoscaleFlags{min: -1, max: 3, cpuPercent: -1}
	hpa, _ = f.generate(k, name, "default")
	if len(hpa.GetSpec().GetMetrics()) != 0 {
		t.Errorf("no cpu flag should leave metrics to the server's default, got %v", hpa.GetSpec().GetMetrics())
	}
}

func TestAutoscaleRefusesBadFlags(t *testing.T) {
	k, _ := scheme.Lookup("deployment")
	for _, tc := range []struct {
		f    autoscaleFlags
		flag string
	}{
		{autoscaleFlags{min: -1, max: -1, cpuPercent: -1}, "--max"},
		{autoscaleFlags{min: 5, max: 3, cpuPercent: -1}, "--min"},
		{autoscaleFlags{min: -1, max: 3, cpuPercent: -1, cpu: "lots"}, "--cpu"},
		{autoscaleFlags{min: -1, max: 3, cpuPercent: 50, cpu: "50%"}, "--cpu-percent"},
	} {
		if _, err := tc.f.generate(k, "web", "default"); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%+v: err %v, want one naming %s", tc.f, err, tc.flag)
		}
	}
	if _, _, err := autoscaleTarget([]string{"pod/x"}); err == nil {
		t.Error("autoscaling a pod was accepted")
	}
}
