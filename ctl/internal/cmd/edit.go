package cmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"skiff.dev/client"
	"skiff.dev/ctl/internal/printers"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// editorCommand is $KUBE_EDITOR, $EDITOR, or vi, run as kubectl runs it:
// a command without spaces as it is, one with spaces split on them, and one
// with quotes or backslashes handed to the shell ($SHELL, else /bin/bash)
// rather than parsed here. shell says whether the file's path must be
// appended inside the shell's command line.
func editorCommand() (args []string, shell bool) {
	editor := "vi"
	for _, env := range []string{"KUBE_EDITOR", "EDITOR"} {
		if e := os.Getenv(env); e != "" {
			editor = e
			break
		}
	}
	if !strings.Contains(editor, " ") {
		return []string{editor}, false
	}
	if !strings.ContainsAny(editor, "\"'\\") {
		return strings.Split(editor, " "), false
	}
	sh := os.Getenv("SHELL")
	if sh == "" {
		sh = "/bin/bash"
	}
	return []string{sh, "-c", editor}, true
}

// editorArgs is the editor's command line for path.
func editorArgs(path string) []string {
	args, shell := editorCommand()
	if shell {
		// As kubectl: the path, quoted, ends the shell's command.
		args[len(args)-1] = fmt.Sprintf("%s %q", args[len(args)-1], path)
		return args
	}
	return append(args, path)
}

const editHeader = `# Please edit the object below. Lines beginning with a '#' will be ignored,
# and an empty file will abort the edit. If an error occurs while saving this file will be
# reopened with the relevant failures.
#
`

func newEdit(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "edit (TYPE NAME | TYPE/NAME)",
		Short: "Edit a resource on the server",
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, names, err := o.resolveTargets(cmd, args, "", false)
			if err != nil {
				return err
			}
			for i, d := range ds {
				for _, n := range names[i] {
					if err := o.editOne(cmd, d, n); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
}

func (o *Options) editOne(cmd *cobra.Command, d *client.Dynamic, name string) error {
	obj, err := d.Get(cmd.Context(), name)
	if err != nil {
		return o.printError(err)
	}
	var buf bytes.Buffer
	if err := printers.YAML(&buf, []scheme.Object{obj}, true); err != nil {
		return err
	}
	original := buf.Bytes()
	dir, err := os.MkdirTemp("", "skiffctl-edit-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, strings.ToLower(d.Kind().Kind)+"-"+name+".yaml")
	header := editHeader
	content := original
	var failed []byte
	for {
		if err := os.WriteFile(path, append([]byte(header), content...), 0o600); err != nil {
			return err
		}
		ed := editorArgs(path)
		c := exec.CommandContext(cmd.Context(), ed[0], ed[1:]...)
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, o.streams.Out, o.streams.Err
		if err := c.Run(); err != nil {
			return fmt.Errorf("there was a problem with the editor %q: %w", strings.Join(ed, " "), err)
		}
		edited, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		body := stripComments(edited)
		if len(bytes.TrimSpace(body)) == 0 {
			fmt.Fprintln(o.streams.Err, "Edit cancelled, saved file was empty.")
			return nil
		}
		if bytes.Equal(bytes.TrimSpace(body), bytes.TrimSpace(original)) {
			fmt.Fprintln(o.streams.Err, "Edit cancelled, no changes made.")
			return nil
		}
		if failed != nil && bytes.Equal(body, failed) {
			// Saved again unchanged after an error: give up, as kubectl.
			fmt.Fprintln(o.streams.Err, "error: Edit cancelled, no valid changes were saved.")
			return exitError{code: 1}
		}
		js, err := yaml.YAMLToJSON(body)
		var next scheme.Object
		if err == nil {
			next = d.Kind().New()
			err = codec.DecodeInto(js, next, codec.Options{Strict: true})
		}
		if err == nil {
			if _, err = d.Update(cmd.Context(), next, false); err == nil {
				fmt.Fprintf(o.streams.Out, "%s edited\n", resourceName(d.Kind(), name))
				return nil
			}
		}
		if !apierrors.IsInvalid(err) && apierrors.ReasonOf(err) != apierrors.ReasonUnknown {
			return o.printError(err)
		}
		// Reopen with the failure on top, as kubectl does.
		msg := o.describeError(err)
		if apierrors.ReasonOf(err) == apierrors.ReasonUnknown {
			msg = err.Error()
		}
		fmt.Fprintln(o.streams.Err, msg)
		header = editHeader + "# " + strings.ReplaceAll(msg, "\n", "\n# ") + "\n#\n"
		content, failed = body, body
	}
}

func stripComments(b []byte) []byte {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\n"))
}

func newDiff(o *Options) *cobra.Command {
	var files []string
	var recursive bool
	c := &cobra.Command{
		Use:   "diff -f FILENAME",
		Short: "Diff the live version against a would-be applied version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := o.readFiles(files, recursive)
			if err != nil {
				return err
			}
			if err := named(objs, "diff"); err != nil {
				return err
			}
			cl, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "skiffctl-diff-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			live, merged := filepath.Join(dir, "LIVE"), filepath.Join(dir, "MERGED")
			os.Mkdir(live, 0o700)
			os.Mkdir(merged, 0o700)
			for _, ob := range objs {
				ns, err := o.namespaceFor(ob)
				if err != nil {
					return err
				}
				d := cl.Resource(ob.kind, ns)
				fname := strings.ReplaceAll(kindName(ob.kind), "/", "_") + "." + ns + "." + ob.obj.GetMetadata().GetName()
				cur, err := d.Get(cmd.Context(), ob.obj.GetMetadata().GetName())
				var liveObj scheme.Object
				switch {
				case apierrors.IsNotFound(err):
				case err != nil:
					return o.printError(err)
				default:
					liveObj = cur
				}
				// What apply would store, computed by the server (dry run).
				after, err := previewApply(cmd, d, ob, liveObj)
				if err != nil {
					return o.printError(err)
				}
				if liveObj != nil {
					if err := writeYAML(filepath.Join(live, fname), liveObj); err != nil {
						return err
					}
				}
				if err := writeYAML(filepath.Join(merged, fname), after); err != nil {
					return err
				}
			}
			diff := exec.CommandContext(cmd.Context(), "diff", "-u", "-N", live, merged)
			diff.Stdout, diff.Stderr = o.streams.Out, o.streams.Err
			if err := diff.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
					return exitError{code: 1} // differences, as kubectl diff exits
				}
				return err
			}
			return nil
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "Filename, directory, or URL to files contains the configuration to diff")
	c.Flags().BoolVarP(&recursive, "recursive", "R", false, "Process the directory used in -f recursively.")
	return c
}

// previewApply asks the server what apply would leave, without writing.
func previewApply(cmd *cobra.Command, d *client.Dynamic, ob object, live scheme.Object) (scheme.Object, error) {
	_, modified, err := withLastApplied(ob)
	if err != nil {
		return nil, err
	}
	if live == nil {
		obj := ob.kind.New()
		if err := codec.DecodeInto(modified, obj, codec.Options{}); err != nil {
			return nil, err
		}
		return d.Create(cmd.Context(), obj, true)
	}
	patchType, patch, err := applyPatch(ob.kind, modified, live)
	if err != nil {
		return nil, err
	}
	return d.Patch(cmd.Context(), live.GetMetadata().GetName(), patchType, patch, "", true)
}

func writeYAML(path string, obj scheme.Object) error {
	// Server-managed noise would make every diff show something.
	js, err := codec.MarshalJSON(obj)
	if err != nil {
		return err
	}
	var doc map[string]any
	json.Unmarshal(js, &doc)
	if md, ok := doc["metadata"].(map[string]any); ok {
		delete(md, "resourceVersion")
		delete(md, "generation")
		delete(md, "managedFields")
	}
	b, _ := json.Marshal(doc)
	y, err := yaml.JSONToYAML(b)
	if err != nil {
		return err
	}
	return os.WriteFile(path, y, 0o600)
}
