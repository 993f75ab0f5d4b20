package cmd

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/proto/api"
	"skiff.dev/proto/scheme"
)

func newExplain(o *Options) *cobra.Command {
	var recursive bool
	return &cobra.Command{
		Use:   "explain TYPE[.FIELD]...",
		Short: "Get documentation for a resource",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			parts := strings.Split(args[0], ".")
			k, err := scheme.Lookup(parts[0])
			if err != nil {
				return err
			}
			msg, _ := api.Docs(string(k.FullName()))
			var field *api.FieldDoc
			path := []string{}
			for _, p := range parts[1:] {
				if msg == nil {
					return fmt.Errorf("field %q does not exist", strings.Join(append(path, p), "."))
				}
				var found *api.FieldDoc
				for i := range msg.Fields {
					if msg.Fields[i].Name == p {
						found = &msg.Fields[i]
					}
				}
				if found == nil {
					return fmt.Errorf("field %q does not exist", strings.Join(append(path, p), "."))
				}
				path = append(path, p)
				field = found
				msg, _ = api.Docs(found.Type)
			}
			w := o.streams.Out
			if k.Group != "" {
				fmt.Fprintf(w, "GROUP:      %s\n", k.Group)
			}
			fmt.Fprintf(w, "KIND:       %s\nVERSION:    %s\n\n", k.Kind, k.Version)
			if field != nil {
				fmt.Fprintf(w, "FIELD: %s <%s>\n\n", field.Name, typeName(*field))
				fmt.Fprintln(w, "DESCRIPTION:")
				indent(w, field.Doc, "    ")
				if msg != nil && msg.Doc != "" && msg.Doc != field.Doc {
					indent(w, msg.Doc, "    ")
				}
			} else if msg != nil {
				fmt.Fprintln(w, "DESCRIPTION:")
				indent(w, msg.Doc, "    ")
			}
			if msg == nil || len(msg.Fields) == 0 || isSpecial(msg.Name) {
				return nil
			}
			fmt.Fprintln(w, "FIELDS:")
			if field == nil {
				fmt.Fprintf(w, "  apiVersion\t<string>\n    APIVersion defines the versioned schema of this representation of an object.\n\n  kind\t<string>\n    Kind is a string value representing the REST resource this object represents.\n\n")
			}
			printFields(w, msg, "  ", recursive, map[string]bool{})
			return nil
		},
	}
}

func isSpecial(full string) bool {
	switch full {
	case "skiff.api.meta.v1.Quantity", "skiff.api.meta.v1.IntOrString", "skiff.api.meta.v1.Time", "skiff.api.meta.v1.MicroTime", "skiff.api.meta.v1.Duration":
		return true
	}
	return false
}

func printFields(w io.Writer, msg *api.MessageDoc, pad string, recursive bool, seen map[string]bool) {
	for _, f := range msg.Fields {
		fmt.Fprintf(w, "%s%s\t<%s>\n", pad, f.Name, typeName(f))
		if !recursive {
			indent(w, f.Doc, pad+"  ")
			continue
		}
		if sub, ok := api.Docs(f.Type); ok && !seen[f.Type] && !isSpecial(f.Type) {
			seen[f.Type] = true
			printFields(w, sub, pad+"  ", recursive, seen)
			delete(seen, f.Type)
		}
	}
}

// typeName is kubectl explain's type: <string>, <integer>, <[]Container>, <map[string]string>.
func typeName(f api.FieldDoc) string {
	t := f.Type
	switch {
	case strings.HasPrefix(t, "map<"):
		kv := strings.Split(strings.TrimSuffix(strings.TrimPrefix(t, "map<"), ">"), ",")
		v := strings.TrimSpace(kv[len(kv)-1])
		return "map[string]" + shortType(v)
	}
	s := shortType(t)
	if f.Repeated {
		return "[]" + s
	}
	return s
}

func shortType(t string) string {
	switch t {
	case "string", "bytes":
		return "string"
	case "bool":
		return "boolean"
	case "int32", "int64", "uint32", "uint64":
		return "integer"
	case "double", "float":
		return "number"
	case "skiff.api.meta.v1.Time", "skiff.api.meta.v1.MicroTime":
		return "string"
	}
	return t[strings.LastIndex(t, ".")+1:]
}

// indent writes doc wrapped to 80 columns, as kubectl explain does.
func indent(w io.Writer, doc, pad string) {
	if doc == "" {
		fmt.Fprintln(w, pad+"<empty>")
		fmt.Fprintln(w)
		return
	}
	for _, para := range strings.Split(doc, "\n") {
		line := pad
		for _, word := range strings.Fields(para) {
			if len(line)+len(word)+1 > 80 && strings.TrimSpace(line) != "" {
				fmt.Fprintln(w, line)
				line = pad
			}
			if strings.TrimSpace(line) == "" {
				line += word
			} else {
				line += " " + word
			}
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
}
