package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfiguration(t *testing.T) {
	write := func(s string) string {
		p := filepath.Join(t.TempDir(), "sched.yaml")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	c, err := LoadConfiguration(write(`
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  plugins:
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 1}, {name: memory, weight: 1}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if *c.PercentageOfNodesToScore != 30 || len(c.Profiles) != 2 || c.Profiles[1].Plugins.Score.Enabled[0].Weight != 5 {
		t.Fatalf("configuration: %+v", c)
	}
	for _, tc := range []struct{ file, want string }{
		{"percentageOfNodesToScore: 120\n", "percentageOfNodesToScore: Invalid value: 120: not in valid range [0-100]"},
		{"profiles: [{schedulerName: x, plugins: {score: {enabled: [{name: Nope}]}}}]\nbogus: 1\n", `unknown field "bogus"`},
	} {
		if _, err := LoadConfiguration(write(tc.file)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %s", tc.file, err, tc.want)
		}
	}
}
