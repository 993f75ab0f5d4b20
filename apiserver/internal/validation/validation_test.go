package validation

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"skiff.dev/proto/codec"
	"skiff.dev/proto/defaults"
	"skiff.dev/proto/scheme"
)

func decode(t *testing.T, y string) scheme.Object {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	o, err := codec.DecodeObject(j, codec.Options{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if o.GetMetadata().Namespace == "" {
		if k, _ := scheme.ForMessage(o); k.Namespaced {
			o.GetMetadata().Namespace = "default"
		}
	}
	defaults.Apply(o)
	return o
}

const podHead = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"

const deployHead = `apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec: {containers: [{name: c, image: i:1}]}
`

func TestValidateCreate(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // every error, in upstream's words; none for valid objects
	}{
		{"valid pod", podHead + "  containers: [{name: c, image: nginx:1.27}]", nil},
		{"name not DNS-1123", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}", []string{
			`metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`}},
		{"namespace name is a label", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}", []string{
			`metadata.name: Invalid value: "a.b": must not contain dots`}},
		{"name required", "apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {a: b}}", []string{
			`metadata.name: Required value: name or generateName is required`}},
		{"bad label", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, labels: {\"a b\": c}}", []string{
			`metadata.labels: Invalid value: "a b": name part must consist of alphanumeric characters`}},
		{"bad label value", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, labels: {a: \"-x\"}}", []string{
			`metadata.labels: Invalid value: "-x": a valid label must be an empty string or consist of alphanumeric characters`}},
		{"bad annotation key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, annotations: {\"/x\": v}}", []string{
			`metadata.annotations: Invalid value: "/x": prefix part must be non-empty`}},
		{"no containers", podHead + "  containers: []", []string{`spec.containers: Required value: must have at least one container`}},
		{"duplicate container and missing image", podHead + "  containers: [{name: c, image: i:1}, {name: c}]", []string{
			`spec.containers[1].name: Duplicate value: "c"`, `spec.containers[1].image: Required value`}},
		{"init and app container names are shared", podHead + "  initContainers: [{name: c, image: i:1}]\n  containers: [{name: c, image: i:1}]", []string{
			`spec.containers[0].name: Duplicate value: "c"`}},
		{"ports", podHead + "  containers: [{name: c, image: i:1, ports: [{containerPort: 70000, name: toolongportname1, protocol: ICMP}]}]", []string{
			`spec.containers[0].ports[0].name: Invalid value: "toolongportname1": must be no more than 15 characters`,
			`spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive`,
			`spec.containers[0].ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"`}},
		{"env", podHead + "  containers: [{name: c, image: i:1, env: [{name: \"1X\", value: a}, {name: B, valueFrom: {fieldRef: {fieldPath: a}, secretKeyRef: {name: s, key: k}}}]}]", []string{
			`spec.containers[0].env[0].name: Invalid value: "1X": a valid environment variable name must consist of`,
			`spec.containers[0].env[1].valueFrom: Invalid value: "": may not have more than one field specified at a time`}},
		{"requests above limits", podHead + "  containers: [{name: c, image: i:1, resources: {limits: {cpu: 100m}, requests: {cpu: 200m}}}]", []string{
			`spec.containers[0].resources.requests[cpu]: Invalid value: "200m": must be less than or equal to cpu limit of 100m`}},
		{"negative quantity", podHead + "  containers: [{name: c, image: i:1, resources: {requests: {memory: -1Gi}}}]", []string{
			`spec.containers[0].resources.requests[memory]: Invalid value: "-1Gi": must be greater than or equal to 0`}},
		{"probe without handler", podHead + "  containers: [{name: c, image: i:1, livenessProbe: {periodSeconds: 5}}]", []string{
			`spec.containers[0].livenessProbe: Required value: must specify a handler type`}},
		{"volumes", podHead + "  volumes: [{name: v, emptyDir: {}}, {name: v, emptyDir: {}}, {name: w}]\n  containers: [{name: c, image: i:1, volumeMounts: [{name: nope, mountPath: /x}, {name: v}]}]", []string{
			`spec.volumes[1].name: Duplicate value: "v"`, `spec.volumes[2]: Required value: must specify a volume type`,
			`spec.containers[0].volumeMounts[0].name: Not found: "nope"`, `spec.containers[0].volumeMounts[1].mountPath: Required value`}},
		{"enums", podHead + "  restartPolicy: Sometimes\n  dnsPolicy: Maybe\n  containers: [{name: c, image: i:1}]", []string{
			`spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"`,
			`spec.dnsPolicy: Unsupported value: "Maybe": supported values: "ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"`}},
		{"tolerations", podHead + "  tolerations: [{key: k, operator: Exists, value: v}, {operator: Equal}, {key: k, effect: Sometimes}]\n  containers: [{name: c, image: i:1}]", []string{
			`spec.tolerations[0].operator: Invalid value: "v": value must be empty when ` + "`operator`" + ` is 'Exists'`,
			`spec.tolerations[1].operator: Invalid value: "Equal": operator must be Exists when ` + "`key`" + ` is empty`,
			`spec.tolerations[2].effect: Unsupported value: "Sometimes"`}},
		{"node affinity Gt", podHead + "  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: cores, operator: Gt, values: [\"a\"]}]}]}}}\n  containers: [{name: c, image: i:1}]", []string{
			`spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]: Invalid value: "a": must be an integer`}},
		{"topology spread", podHead + "  topologySpreadConstraints: [{maxSkew: 0, topologyKey: \"\", whenUnsatisfiable: ScheduleAnyway, minDomains: 2}]\n  containers: [{name: c, image: i:1}]", []string{
			`spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than 0`,
			`spec.topologySpreadConstraints[0].topologyKey: Required value: can not be empty`,
			`spec.topologySpreadConstraints[0].minDomains: Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway`}},
		{"valid deployment", deployHead, nil},
		{"negative replicas", strings.Replace(deployHead, "spec:\n", "spec:\n  replicas: -2\n", 1), []string{
			`spec.replicas: Invalid value: -2: must be greater than or equal to 0`}},
		{"selector does not match template", strings.Replace(deployHead, "labels: {app: a}", "labels: {app: b}", 1), []string{
			"spec.template.metadata.labels: Invalid value: {\"app\":\"b\"}: `selector` does not match template `labels`"}},
		{"both surges zero", strings.Replace(deployHead, "spec:\n", "spec:\n  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}\n", 1), []string{
			"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0\": may not be 0 when `maxSurge` is 0"}},
		{"strategy type", strings.Replace(deployHead, "spec:\n", "spec:\n  strategy: {type: Blue}\n", 1), []string{
			`spec.strategy.type: Unsupported value: "Blue": supported values: "Recreate", "RollingUpdate"`}},
		{"deployment template restartPolicy", strings.Replace(deployHead, "spec: {containers", "spec: {restartPolicy: Never, containers", 1), []string{
			`spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"`}},
		{"cron schedule", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: \"bad\"\n  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: i:1}]}}}}", []string{
			`spec.schedule: Invalid value: "bad": expected exactly 5 fields, found 1: [bad]`}},
		{"cron TZ in schedule", cronHead("c", `"TZ=Europe/Berlin 0 9 * * *"`, ""), []string{
			`spec.schedule: Invalid value: "TZ=Europe/Berlin 0 9 * * *": cannot use TZ or CRON_TZ in schedule, use timeZone field instead`}},
		{"cron CRON_TZ in schedule", cronHead("c", `"CRON_TZ=UTC @daily"`, ""), []string{
			`spec.schedule: Invalid value: "CRON_TZ=UTC @daily": cannot use TZ or CRON_TZ in schedule, use timeZone field instead`}},
		{"cron valid time zone and macro", cronHead("c", "\"@hourly\"", "Europe/Berlin"), nil},
		{"cron unknown time zone", cronHead("c", `"0 9 * * *"`, "Mars/Olympus"), []string{
			`spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus`}},
		{"cron time zone path tricks", cronHead("c", `"0 9 * * *"`, "../etc/passwd"), []string{
			`spec.timeZone: Invalid value: "../etc/passwd": unknown time zone ../etc/passwd`}},
		{"cron empty time zone", cronHead("c", `"0 9 * * *"`, `""`), []string{
			`spec.timeZone: Invalid value: "": timeZone must be nil or non-empty string`}},
		{"cron Local time zone", cronHead("c", `"0 9 * * *"`, "Local"), []string{
			`spec.timeZone: Invalid value: "Local": timeZone must be an explicit time zone`}},
		{"cron name too long", cronHead(strings.Repeat("n", 53), `"0 9 * * *"`, ""), []string{
			`metadata.name: Invalid value: "` + strings.Repeat("n", 53) + `": must be no more than 52 characters`}},
		{"job restartPolicy", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  backoffLimit: -1\n  template: {spec: {containers: [{name: c, image: i:1}]}}", []string{
			`spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0`,
			`spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never"`}},
		{"service ports", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 0}, {port: 80, targetPort: 0, nodePort: 31000}]", []string{
			`spec.ports[0].name: Required value`, `spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive`,
			`spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive`,
			`spec.ports[1].name: Required value`, `spec.ports[1].nodePort: Forbidden: may not be used when ` + "`type`" + ` is 'ClusterIP'`}},
		{"service nodePort range", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 80}]", []string{
			`spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767`}},
		{"service type", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: Magic\n  ports: [{port: 80}]", []string{
			`spec.type: Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"`}},
		{"configmap key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {\"a/b\": x}", []string{
			`data[a/b]: Invalid value: "a/b": a valid config key must consist of alphanumeric characters, '-', '_' or '.'`}},
		{"tls secret keys", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\ndata: {tls.crt: YQ==}", []string{
			`data[tls.key]: Required value`}},
		{"node taint effect", "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {taints: [{key: k, effect: Never}]}", []string{
			`spec.taints[0].effect: Unsupported value: "Never": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"`}},
		{"hpa replicas", "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec: {scaleTargetRef: {kind: Deployment, name: d}, minReplicas: 5, maxReplicas: 2}", []string{
			"spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"}},
		{"pdb both", "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\nspec: {minAvailable: 1, maxUnavailable: 1, selector: {matchLabels: {a: b}}}", []string{
			`spec: Invalid value: "": minAvailable and maxUnavailable cannot be both set`}},
		{"priority class value", "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: p}\nvalue: 2000000000", []string{
			`value: Forbidden: maximum allowed value of a user defined priority is 1000000000`}},
		{"role rules", "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\nrules: [{apiGroups: [\"\"], resources: [pods]}]", []string{
			`rules[0].verbs: Required value: verbs must contain at least one value`}},
		{"rolebinding subject kind", "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: r}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: x}\nsubjects: [{kind: Robot, name: r2}]", []string{
			`subjects[0].kind: Unsupported value: "Robot": supported values: "Group", "ServiceAccount", "User"`}},
		{"endpoint slice", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: [{addresses: [\"not-an-ip\"]}]", []string{
			`endpoints[0].addresses[0]: Invalid value: "not-an-ip": must be a valid IP address`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateCreate(decode(t, tc.yaml), Options{})
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(errs), len(tc.want), errs.ToAggregate())
			}
			for i, w := range tc.want {
				if got := errs[i].Error(); !strings.HasPrefix(got, w) {
					t.Errorf("error %d:\n got %s\nwant %s…", i, got, w)
				}
			}
		})
	}
}

func TestDocumentationExamplesAreValid(t *testing.T) {
	files, _ := filepath.Glob("../../../manifests/examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		docs, err := codec.ReadManifests(strings.NewReader(string(data)), codec.Options{Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			o := d.Object.(scheme.Object)
			if k, _ := scheme.ForMessage(o); k.Namespaced && o.GetMetadata().Namespace == "" {
				o.GetMetadata().Namespace = "default"
			}
			defaults.Apply(o)
			if errs := ValidateCreate(o, Options{}); len(errs) > 0 {
				t.Errorf("%s: %v", filepath.Base(f), errs.ToAggregate())
			}
		}
	}
}

func TestValidateUpdateImmutableFields(t *testing.T) {
	old := decode(t, deployHead)
	changed := decode(t, strings.ReplaceAll(deployHead, "app: a", "app: b"))
	errs := ValidateUpdate(changed, old, Options{})
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "spec.selector: Invalid value: \"app=b\": field is immutable") {
		t.Fatalf("selector change: %v", errs.ToAggregate())
	}
	p := decode(t, podHead+"  containers: [{name: c, image: i:1}]")
	p2 := decode(t, podHead+"  containers: [{name: c, image: i:2}]")
	if errs := ValidateUpdate(p2, p, Options{}); len(errs) != 0 {
		t.Fatalf("image change is allowed: %v", errs.ToAggregate())
	}
	p3 := decode(t, podHead+"  restartPolicy: Never\n  containers: [{name: c, image: i:1}]")
	if errs := ValidateUpdate(p3, p, Options{}); len(errs) != 1 || !strings.Contains(errs[0].Error(), "pod updates may not change fields") {
		t.Fatalf("restartPolicy change: %v", errs.ToAggregate())
	}
}

// cronHead is a CronJob manifest with the given name, schedule (YAML) and
// timeZone (YAML; none when empty).
func cronHead(name, schedule, timeZone string) string {
	tz := ""
	if timeZone != "" {
		tz = "  timeZone: " + timeZone + "\n"
	}
	return "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: " + name + "}\nspec:\n  schedule: " + schedule + "\n" + tz +
		"  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: i:1}]}}}}"
}
