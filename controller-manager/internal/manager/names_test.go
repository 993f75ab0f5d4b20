package manager

import (
	"slices"
	"strings"
	"testing"
)

func TestSelect(t *testing.T) {
	available := []string{"deployment-controller", "replicaset-controller", "namespace-controller", "token-cleaner-controller"}
	for _, tc := range []struct {
		name        string
		flag        []string
		enabled     []string
		unavailable []string
		err         string
	}{
		{name: "star runs every default-on controller", flag: []string{"*"},
			enabled: []string{"deployment-controller", "namespace-controller", "replicaset-controller"}},
		{name: "disabled by default needs naming", flag: []string{"*", "tokencleaner"},
			enabled: []string{"deployment-controller", "namespace-controller", "replicaset-controller", "token-cleaner-controller"}},
		{name: "minus removes from star", flag: []string{"*", "-deployment"},
			enabled: []string{"namespace-controller", "replicaset-controller"}},
		{name: "canonical names work as aliases do", flag: []string{"*", "-deployment-controller", "-namespace"},
			enabled: []string{"replicaset-controller"}},
		{name: "without star only the named", flag: []string{"replicaset"},
			enabled: []string{"replicaset-controller"}},
		{name: "first word about a name decides", flag: []string{"-replicaset", "replicaset", "*"},
			enabled: []string{"deployment-controller", "namespace-controller"}},
		{name: "named but not in skiff is reported", flag: []string{"*", "cronjob"},
			enabled:     []string{"deployment-controller", "namespace-controller", "replicaset-controller"},
			unavailable: []string{"cronjob-controller"}},
		{name: "star does not report what skiff lacks", flag: []string{"*"},
			enabled: []string{"deployment-controller", "namespace-controller", "replicaset-controller"}},
		{name: "unknown name", flag: []string{"*", "-frobnicator"}, err: `"frobnicator" is not in the list of known controllers`},
		{name: "nothing", flag: []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Select(tc.flag, available)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "--controllers: ") {
					t.Fatalf("err = %v, want one naming --controllers and %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Enabled, tc.enabled) || !slices.Equal(s.Unavailable, tc.unavailable) {
				t.Errorf("Select(%q) = enabled %q unavailable %q, want %q %q", tc.flag, s.Enabled, s.Unavailable, tc.enabled, tc.unavailable)
			}
		})
	}
}
