// Command protogen writes Skiff's .proto sources for the Kubernetes API groups
// Skiff serves.
//
// Skiff's resources must carry exactly upstream's fields, JSON names and wire
// numbers, so rather than transcribe thousands of fields by hand we read them off
// the Go types of k8s.io/api (struct tags give the JSON name, omitempty and the
// protobuf field number; the source files give the doc comments) and write one
// proto3 file per API group. The Go code is then generated from those files by
// protoc-gen-go; nothing in Skiff's binaries imports k8s.io/api.
//
// Where encoding/json and proto3 disagree (omitempty, embedded structs, structs
// held by value), the difference is recorded as a field option from
// api/options.proto, and Skiff's JSON codec follows it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// group is one API group/version and the proto package it becomes.
type group struct {
	goPath    string // import path of the upstream Go package
	protoPkg  string // proto package
	dir       string // directory under proto/, also the Go import path suffix
	goName    string // Go package name
	roots     []any  // the kinds (and subresource bodies) this group serves
	messages  map[string]reflect.Type
	fileDocs  map[string]string // "Type" and "Type.Field" → doc comment
	importsOf map[string]bool
}

const goModule = "skiff.dev/proto"

var groups = []*group{
	{goPath: "k8s.io/apimachinery/pkg/apis/meta/v1", protoPkg: "skiff.api.meta.v1", dir: "api/meta/v1", goName: "metav1"},
	{goPath: "k8s.io/api/core/v1", protoPkg: "skiff.api.core.v1", dir: "api/core/v1", goName: "corev1", roots: []any{
		corev1.Namespace{}, corev1.Pod{}, corev1.Node{}, corev1.Service{}, corev1.Endpoints{},
		corev1.ConfigMap{}, corev1.Secret{}, corev1.ServiceAccount{}, corev1.Event{},
		corev1.ReplicationController{}, corev1.PersistentVolume{}, corev1.PersistentVolumeClaim{},
		corev1.ResourceQuota{}, corev1.LimitRange{}, corev1.Binding{}, corev1.PodLogOptions{},
	}},
	{goPath: "k8s.io/api/apps/v1", protoPkg: "skiff.api.apps.v1", dir: "api/apps/v1", goName: "appsv1", roots: []any{
		appsv1.Deployment{}, appsv1.ReplicaSet{}, appsv1.StatefulSet{}, appsv1.DaemonSet{}, appsv1.ControllerRevision{},
	}},
	{goPath: "k8s.io/api/batch/v1", protoPkg: "skiff.api.batch.v1", dir: "api/batch/v1", goName: "batchv1", roots: []any{
		batchv1.Job{}, batchv1.CronJob{},
	}},
	{goPath: "k8s.io/api/discovery/v1", protoPkg: "skiff.api.discovery.v1", dir: "api/discovery/v1", goName: "discoveryv1", roots: []any{
		discoveryv1.EndpointSlice{},
	}},
	{goPath: "k8s.io/api/coordination/v1", protoPkg: "skiff.api.coordination.v1", dir: "api/coordination/v1", goName: "coordinationv1", roots: []any{
		coordinationv1.Lease{},
	}},
	{goPath: "k8s.io/api/rbac/v1", protoPkg: "skiff.api.rbac.v1", dir: "api/rbac/v1", goName: "rbacv1", roots: []any{
		rbacv1.Role{}, rbacv1.ClusterRole{}, rbacv1.RoleBinding{}, rbacv1.ClusterRoleBinding{},
	}},
	{goPath: "k8s.io/api/autoscaling/v1", protoPkg: "skiff.api.autoscaling.v1", dir: "api/autoscaling/v1", goName: "autoscalingv1", roots: []any{
		autoscalingv1.Scale{},
	}},
	{goPath: "k8s.io/api/autoscaling/v2", protoPkg: "skiff.api.autoscaling.v2", dir: "api/autoscaling/v2", goName: "autoscalingv2", roots: []any{
		autoscalingv2.HorizontalPodAutoscaler{},
	}},
	{goPath: "k8s.io/api/policy/v1", protoPkg: "skiff.api.policy.v1", dir: "api/policy/v1", goName: "policyv1", roots: []any{
		policyv1.PodDisruptionBudget{}, policyv1.Eviction{},
	}},
	{goPath: "k8s.io/api/authentication/v1", protoPkg: "skiff.api.authentication.v1", dir: "api/authentication/v1", goName: "authenticationv1", roots: []any{
		authenticationv1.TokenRequest{}, authenticationv1.TokenReview{},
	}},
	{goPath: "k8s.io/api/scheduling/v1", protoPkg: "skiff.api.scheduling.v1", dir: "api/scheduling/v1", goName: "schedulingv1", roots: []any{
		schedulingv1.PriorityClass{},
	}},
	{goPath: "k8s.io/api/storage/v1", protoPkg: "skiff.api.storage.v1", dir: "api/storage/v1", goName: "storagev1", roots: []any{
		storagev1.StorageClass{}, storagev1.CSIDriver{}, storagev1.CSINode{}, storagev1.VolumeAttachment{},
	}},
	// metrics.k8s.io is metrics-server's group upstream (k8s.io/metrics);
	// Skiff's apiserver answers it from its own scrape cache.
	{goPath: "k8s.io/metrics/pkg/apis/metrics/v1beta1", protoPkg: "skiff.api.metrics.v1beta1", dir: "api/metrics/v1beta1", goName: "metricsv1beta1", roots: []any{
		metricsv1beta1.NodeMetrics{}, metricsv1beta1.PodMetrics{},
		metricsv1beta1.NodeMetricsList{}, metricsv1beta1.PodMetricsList{},
	}},
}

// special are upstream types with a JSON form of their own; they become small
// hand-shaped messages in the meta package, and the codec knows them by name.
var special = map[reflect.Type]string{
	reflect.TypeFor[resource.Quantity]():    "Quantity",
	reflect.TypeFor[intstr.IntOrString]():   "IntOrString",
	reflect.TypeFor[metav1.Time]():          "Time",
	reflect.TypeFor[metav1.MicroTime]():     "MicroTime",
	reflect.TypeFor[metav1.Duration]():      "Duration",
	reflect.TypeFor[metav1.FieldsV1]():      "FieldsV1",
	reflect.TypeFor[runtime.RawExtension](): "RawExtension",
}

const specialDefs = `// Quantity is a resource amount ("500m", "1Gi"); in JSON it is that string.
message Quantity {
  string string = 1;
}

// IntOrString holds either a number or a string ("8080" or "http", "25%");
// in JSON it is the bare number or string.
message IntOrString {
  // 0 for an int, 1 for a string.
  int64 type = 1;
  int32 intVal = 2;
  string strVal = 3;
}

// Time is a moment to the second; in JSON an RFC 3339 string, or null when zero.
message Time {
  int64 seconds = 1;
  int32 nanos = 2;
}

// MicroTime is a moment to the microsecond; in JSON an RFC 3339 string with microseconds.
message MicroTime {
  int64 seconds = 1;
  int32 nanos = 2;
}

// Duration is a span of time; in JSON a Go duration string ("1m30s").
message Duration {
  int64 duration = 1;
}

// FieldsV1 is a set of fields in upstream's managed-fields format; in JSON the raw object.
message FieldsV1 {
  bytes Raw = 1;
}

// RawExtension is an embedded object; in JSON the raw object.
message RawExtension {
  bytes raw = 1;
}
`

func main() {
	out := flag.String("out", ".", "directory that holds the proto module")
	flag.Parse()

	byPath := map[string]*group{}
	for _, g := range groups {
		g.messages = map[string]reflect.Type{}
		g.importsOf = map[string]bool{}
		byPath[g.goPath] = g
	}
	var walk func(t reflect.Type)
	seen := map[reflect.Type]bool{}
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			if t.Kind() == reflect.Map {
				walk(t.Key())
				if listValue(t.Elem()) && !seen[t.Elem()] {
					seen[t.Elem()] = true
					byPath[t.Elem().PkgPath()].messages[t.Elem().Name()] = t.Elem()
				}
			}
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		if _, ok := special[t]; ok {
			return
		}
		g := byPath[t.PkgPath()]
		g.messages[t.Name()] = t
		for i := 0; i < t.NumField(); i++ {
			if f := t.Field(i); !skipField(f, byPath) {
				walk(f.Type)
			}
		}
	}
	for _, g := range groups {
		for _, r := range g.roots {
			walk(reflect.TypeOf(r))
		}
	}
	// metav1 types every client needs even where no kind embeds them.
	walk(reflect.TypeFor[metav1.Status]())

	modCache := goEnv("GOMODCACHE")
	for _, g := range groups {
		g.fileDocs = readDocs(filepath.Join(modCache, modDir(g.goPath)))
	}
	for _, g := range groups {
		src := render(g, byPath)
		path := filepath.Join(*out, g.dir, "generated.proto")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(path, src, 0o644); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %d messages\n", path, len(g.messages))
	}
}

// skipField reports the fields Skiff does not carry: TypeMeta (apiVersion and
// kind travel beside the object, as in upstream's protobuf envelope) and fields
// whose types live in alpha or beta API groups that Skiff does not serve.
func skipField(f reflect.StructField, byPath map[string]*group) bool {
	if f.Type == reflect.TypeFor[metav1.TypeMeta]() {
		return true
	}
	t := f.Type
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return false
	}
	if _, ok := special[t]; ok {
		return false
	}
	if byPath[t.PkgPath()] == nil {
		fmt.Fprintf(os.Stderr, "skipping %s (type %s.%s from a group Skiff does not serve)\n", f.Name, t.PkgPath(), t.Name())
		return true
	}
	return false
}

func render(g *group, byPath map[string]*group) []byte {
	var body bytes.Buffer
	names := make([]string, 0, len(g.messages))
	for n := range g.messages {
		names = append(names, n)
	}
	sort.Strings(names)
	usesOptions := false
	for _, n := range names {
		t := g.messages[n]
		writeComment(&body, "", g.fileDocs[n])
		fmt.Fprintf(&body, "message %s {\n", n)
		if listValue(t) {
			// upstream's own protobuf form of a named list in a map value.
			et, _, _ := protoType(t.Elem(), g, byPath)
			fmt.Fprintf(&body, "  // items, sorted as given.\n  repeated %s items = 1;\n}\n\n", et)
			continue
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if skipField(f, byPath) {
				continue
			}
			jsonName, omitempty, inline := jsonTag(f)
			if jsonName == "-" {
				continue
			}
			pname, num := protoTag(f)
			if num == 0 {
				log.Fatalf("%s.%s has no protobuf tag", n, f.Name)
			}
			if pname == "" {
				pname = strings.ToLower(f.Name[:1]) + f.Name[1:]
			}
			ptype, label, byValue := protoType(f.Type, g, byPath)
			var opts []string
			if jsonName != "" && jsonName != lowerCamel(pname) {
				opts = append(opts, fmt.Sprintf("json_name = %q", jsonName))
			}
			if inline {
				opts = append(opts, "(skiff.api.inline) = true")
			} else if !omitempty {
				opts = append(opts, "(skiff.api.emit_empty) = true")
			}
			if byValue {
				opts = append(opts, "(skiff.api.by_value) = true")
			}
			if len(opts) > 1 || (len(opts) == 1 && !strings.HasPrefix(opts[0], "json_name")) {
				usesOptions = true
			}
			writeComment(&body, "  ", g.fileDocs[n+"."+f.Name])
			line := fmt.Sprintf("  %s%s %s = %d", label, ptype, pname, num)
			if len(opts) > 0 {
				line += " [" + strings.Join(opts, ", ") + "]"
			}
			body.WriteString(line + ";\n")
			if i < t.NumField()-1 {
				body.WriteString("\n")
			}
		}
		body.WriteString("}\n\n")
	}
	if g.protoPkg == "skiff.api.meta.v1" {
		body.WriteString(specialDefs)
	}

	var head bytes.Buffer
	head.WriteString("// Code generated by proto/gen from k8s.io/api " + apiVersion() + "; DO NOT EDIT.\n")
	head.WriteString("// The fields, JSON names and wire numbers are upstream's; see proto/gen/main.go.\n\n")
	head.WriteString("syntax = \"proto3\";\n\n")
	fmt.Fprintf(&head, "package %s;\n\n", g.protoPkg)
	var imports []string
	for imp := range g.importsOf {
		imports = append(imports, imp)
	}
	if usesOptions {
		imports = append(imports, "api/options.proto")
	}
	sort.Strings(imports)
	for _, imp := range imports {
		fmt.Fprintf(&head, "import %q;\n", imp)
	}
	if len(imports) > 0 {
		head.WriteString("\n")
	}
	fmt.Fprintf(&head, "option go_package = \"%s/%s;%s\";\n\n", goModule, g.dir, g.goName)
	head.Write(bytes.TrimRight(body.Bytes(), "\n"))
	head.WriteString("\n")
	return head.Bytes()
}

// protoType maps a Go field type to a proto type and label. byValue reports a
// struct held by value, which encoding/json always writes.
func protoType(t reflect.Type, g *group, byPath map[string]*group) (ptype, label string, byValue bool) {
	switch {
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return "bytes", "", false
	case t.Kind() == reflect.Slice:
		et, elabel, _ := protoType(t.Elem(), g, byPath)
		if elabel != "" && elabel != "optional " {
			log.Fatalf("nested repeated type %s", t)
		}
		return et, "repeated ", false
	case t.Kind() == reflect.Map:
		kt, _, _ := protoType(t.Key(), g, byPath)
		if listValue(t.Elem()) {
			return fmt.Sprintf("map<%s, %s>", kt, messageName(t.Elem(), g, byPath)), "", false
		}
		vt, vlabel, _ := protoType(t.Elem(), g, byPath)
		if vlabel == "repeated " {
			log.Fatalf("map of lists %s is not representable", t)
		}
		return fmt.Sprintf("map<%s, %s>", kt, vt), "", false
	case t.Kind() == reflect.Pointer:
		et, _, _ := protoType(t.Elem(), g, byPath)
		if t.Elem().Kind() == reflect.Struct {
			return et, "", false
		}
		return et, "optional ", false
	case t.Kind() == reflect.Struct:
		if name, ok := special[t]; ok {
			if g.protoPkg != "skiff.api.meta.v1" {
				g.importsOf["api/meta/v1/generated.proto"] = true
				return "skiff.api.meta.v1." + name, "", true
			}
			return name, "", true
		}
		og := byPath[t.PkgPath()]
		if og == g {
			return t.Name(), "", true
		}
		g.importsOf[og.dir+"/generated.proto"] = true
		return og.protoPkg + "." + t.Name(), "", true
	}
	switch t.Kind() {
	case reflect.String:
		return "string", "", false
	case reflect.Bool:
		return "bool", "", false
	case reflect.Int32:
		return "int32", "", false
	case reflect.Int64, reflect.Int:
		return "int64", "", false
	case reflect.Uint32:
		return "uint32", "", false
	case reflect.Uint64:
		return "uint64", "", false
	case reflect.Float64:
		return "double", "", false
	}
	log.Fatalf("no proto type for %s", t)
	return "", "", false
}

// listValue reports a named list type used as a map value (authentication's
// ExtraValue): proto maps cannot hold lists, so it becomes a message with one
// repeated field, as in upstream's generated.proto.
func listValue(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && t.Name() != "" && t.Elem().Kind() != reflect.Uint8
}

// messageName is the proto name of the message for named type t, seen from g.
func messageName(t reflect.Type, g *group, byPath map[string]*group) string {
	og := byPath[t.PkgPath()]
	if og == g {
		return t.Name()
	}
	g.importsOf[og.dir+"/generated.proto"] = true
	return og.protoPkg + "." + t.Name()
}

func jsonTag(f reflect.StructField) (name string, omitempty, inline bool) {
	tag, ok := f.Tag.Lookup("json")
	parts := strings.Split(tag, ",")
	name = parts[0]
	for _, p := range parts[1:] {
		switch p {
		case "omitempty", "omitzero":
			omitempty = true
		case "inline":
			inline = true
		}
	}
	if f.Anonymous && name == "" {
		inline = true
	}
	if !ok && !f.Anonymous {
		name = f.Name
	}
	return name, omitempty, inline
}

func protoTag(f reflect.StructField) (name string, num int) {
	for _, p := range strings.Split(f.Tag.Get("protobuf"), ",") {
		if n, err := strconv.Atoi(p); err == nil && num == 0 {
			num = n
		}
		if v, ok := strings.CutPrefix(p, "name="); ok {
			name = v
		}
	}
	return name, num
}

func lowerCamel(s string) string {
	// protoc's default json_name: underscores removed and the next letter upper-cased.
	var b strings.Builder
	up := false
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up && r >= 'a' && r <= 'z' {
			r -= 'a' - 'A'
		}
		up = false
		b.WriteRune(r)
	}
	return b.String()
}

func writeComment(b *bytes.Buffer, indent, text string) {
	text = strings.TrimSpace(text)
	if text == "" {
		return
	}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimRight(l, " \t")
		if strings.HasPrefix(strings.TrimSpace(l), "+") {
			continue // upstream code-generator markers
		}
		if l == "" {
			fmt.Fprintf(b, "%s//\n", indent)
			continue
		}
		fmt.Fprintf(b, "%s// %s\n", indent, l)
	}
}

// readDocs returns the doc comments of the package's types and fields.
func readDocs(dir string) map[string]string {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.ParseComments)
	if err != nil {
		log.Fatal(err)
	}
	docs := map[string]string{}
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, d := range f.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.TYPE {
					continue
				}
				for _, s := range gd.Specs {
					ts := s.(*ast.TypeSpec)
					text := ts.Doc.Text()
					if text == "" {
						text = gd.Doc.Text()
					}
					docs[ts.Name.Name] = text
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					for _, fl := range st.Fields.List {
						name := ""
						if len(fl.Names) > 0 {
							name = fl.Names[0].Name
						} else {
							name = exprName(fl.Type)
						}
						docs[ts.Name.Name+"."+name] = fl.Doc.Text()
					}
				}
			}
		}
	}
	return docs
}

func exprName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return x.Sel.Name
	case *ast.StarExpr:
		return exprName(x.X)
	}
	return ""
}

func modDir(goPath string) string {
	for _, m := range []string{"k8s.io/api", "k8s.io/apimachinery", "k8s.io/metrics"} {
		if rest, ok := strings.CutPrefix(goPath, m+"/"); ok {
			return filepath.Join(m+"@"+moduleVersion(m), rest)
		}
	}
	log.Fatalf("no module for %s", goPath)
	return ""
}

func apiVersion() string { return moduleVersion("k8s.io/api") }

// moduleVersion is the version of module m that go.mod requires.
func moduleVersion(m string) string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", m).Output()
	if err != nil {
		log.Fatalf("go list -m %s: %v", m, err)
	}
	return strings.TrimSpace(string(out))
}

func goEnv(k string) string {
	out, err := exec.Command("go", "env", k).Output()
	if err != nil {
		log.Fatalf("go env %s: %v", k, err)
	}
	return strings.TrimSpace(string(out))
}
