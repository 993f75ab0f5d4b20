package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"k8s.io/client-go/util/jsonpath"

	"skiff.dev/proto/scheme"
)

// JSONPath prints -o jsonpath=TEMPLATE with upstream's engine, over the
// object's JSON (a List of them when several, as kubectl).
func JSONPath(w io.Writer, template string, objs []scheme.Object, single bool) error {
	jp := jsonpath.New("out").AllowMissingKeys(true)
	if err := jp.Parse(relaxed(template)); err != nil {
		return fmt.Errorf("error parsing jsonpath %s, %w", template, err)
	}
	doc, err := document(objs, single)
	if err != nil {
		return err
	}
	return jp.Execute(w, normalize(doc))
}

// relaxed accepts ".a.b" as "{.a.b}", as kubectl does.
func relaxed(t string) string {
	if !strings.Contains(t, "{") {
		return "{" + t + "}"
	}
	return t
}

// normalize round-trips through encoding/json so numbers are float64 and
// maps are map[string]any, what the jsonpath engine expects.
func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	json.Unmarshal(b, &out)
	return out
}

var columnSpec = regexp.MustCompile(`^([^:]+):(.+)$`)

// CustomColumns prints -o custom-columns=NAME:.path,... as a table.
func CustomColumns(w io.Writer, spec string, objs []scheme.Object, noHeaders bool) error {
	type col struct {
		header string
		jp     *jsonpath.JSONPath
	}
	var cols []col
	for _, part := range strings.Split(spec, ",") {
		m := columnSpec.FindStringSubmatch(part)
		if m == nil {
			return fmt.Errorf("unexpected custom-columns spec: %s, expected <header>:<json-path-expr>", part)
		}
		jp := jsonpath.New(m[1]).AllowMissingKeys(true)
		if err := jp.Parse(relaxed(m[2])); err != nil {
			return fmt.Errorf("error parsing %s: %w", m[2], err)
		}
		cols = append(cols, col{m[1], jp})
	}
	tw := NewTabWriter(w)
	if !noHeaders {
		hs := make([]string, len(cols))
		for i, c := range cols {
			hs[i] = c.header
		}
		fmt.Fprintln(tw, strings.Join(hs, "\t"))
	}
	for _, o := range objs {
		doc, err := document([]scheme.Object{o}, true)
		if err != nil {
			return err
		}
		data := normalize(doc)
		cells := make([]string, len(cols))
		for i, c := range cols {
			res, err := c.jp.FindResults(data)
			if err != nil || len(res) == 0 || len(res[0]) == 0 {
				cells[i] = "<none>"
				continue
			}
			var vals []string
			for _, r := range res[0] {
				vals = append(vals, fmt.Sprint(r.Interface()))
			}
			cells[i] = strings.Join(vals, ",")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// SortBy orders objects by a JSONPath field, as kubectl's --sort-by.
func SortBy(objs []scheme.Object, path string) error {
	jp := jsonpath.New("sort").AllowMissingKeys(true)
	if err := jp.Parse(relaxed(path)); err != nil {
		return fmt.Errorf("couldn't parse --sort-by %s: %w", path, err)
	}
	keys := make([]any, len(objs))
	for i, o := range objs {
		doc, err := document([]scheme.Object{o}, true)
		if err != nil {
			return err
		}
		res, err := jp.FindResults(normalize(doc))
		if err == nil && len(res) > 0 && len(res[0]) > 0 {
			keys[i] = res[0][0].Interface()
		}
	}
	type keyed struct {
		key any
		obj scheme.Object
	}
	ks := make([]keyed, len(objs))
	for i := range objs {
		ks[i] = keyed{keys[i], objs[i]}
	}
	less := func(a, b any) bool {
		switch x := a.(type) {
		case float64:
			y, ok := b.(float64)
			return ok && x < y
		case string:
			y, ok := b.(string)
			return ok && x < y
		case nil:
			return b != nil
		}
		return fmt.Sprint(a) < fmt.Sprint(b)
	}
	sort.SliceStable(ks, func(i, j int) bool { return less(ks[i].key, ks[j].key) })
	out := make([]scheme.Object, len(objs))
	for i := range ks {
		out[i] = ks[i].obj
	}
	copy(objs, out)
	return nil
}
