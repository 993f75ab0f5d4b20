package cmd

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/client"
)

func newCp(o *Options) *cobra.Command {
	var container string
	var noPreserve bool
	c := &cobra.Command{
		Use:   "cp <file-spec-src> <file-spec-dest>",
		Short: "Copy files and directories to and from containers",
		Long:  "Copy files and directories to and from containers, through tar in the container as kubectl does: the container's image must have tar.",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := parseFileSpec(args[0]), parseFileSpec(args[1])
			if src.path == "" || dst.path == "" {
				return errors.New("filepath can not be empty")
			}
			switch {
			case src.pod != "" && dst.pod == "":
				return o.copyFromPod(cmd.Context(), src, dst.path, container)
			case src.pod == "" && dst.pod != "":
				return o.copyToPod(cmd.Context(), src.path, dst, container, noPreserve)
			case src.pod != "":
				return errors.New("one of src or dest must be a local file specification")
			}
			return errors.New("one of src or dest must be a remote file specification")
		},
	}
	c.Flags().StringVarP(&container, "container", "c", "", "Container name. If omitted, use the kubectl.kubernetes.io/default-container annotation for selecting the container, or the first container in the pod will be chosen.")
	c.Flags().BoolVar(&noPreserve, "no-preserve", false, "The copied file/directory's ownership and permissions will not be preserved in the container")
	return c
}

// fileSpec is [[namespace/]pod:]path, kubectl's extractFileSpec.
type fileSpec struct {
	ns, pod, path string
}

func parseFileSpec(arg string) fileSpec {
	i := strings.Index(arg, ":")
	// A local path may hold a colon after a slash ("./a:b").
	if i < 0 || strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") {
		return fileSpec{path: arg}
	}
	spec := fileSpec{pod: arg[:i], path: arg[i+1:]}
	if ns, pod, ok := strings.Cut(spec.pod, "/"); ok {
		spec.ns, spec.pod = ns, pod
	}
	return spec
}

func (o *Options) specNamespace(s fileSpec) string {
	if s.ns != "" {
		return s.ns
	}
	return o.namespace()
}

// execCapture runs command in the pod, its stdout to out; stderr is shown
// only if the command fails.
func (o *Options) execCapture(ctx context.Context, s fileSpec, container string, command []string, stdin io.Reader, out io.Writer) error {
	c, err := o.client(ctx)
	if err != nil {
		return o.printError(err)
	}
	var stderr bytes.Buffer
	err = c.Exec(ctx, client.ExecOptions{Namespace: o.specNamespace(s), Name: s.pod, Container: container,
		Command: command, Stdin: stdin, Stdout: out, Stderr: &stderr})
	var exit *client.ExitError
	if errors.As(err, &exit) {
		o.streams.Err.Write(stderr.Bytes())
		return o.printError(err)
	}
	if err != nil {
		return o.printError(err)
	}
	return nil
}

// copyFromPod runs `tar cf - path` in the container and unpacks it at
// dst, the archive's src prefix replaced by dst as kubectl does.
func (o *Options) copyFromPod(ctx context.Context, src fileSpec, dst, container string) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := o.execCapture(ctx, src, container, []string{"tar", "cf", "-", src.path}, nil, pw)
		pw.Close()
		done <- err
	}()
	prefix := strings.TrimLeft(path.Clean(src.path), "/")
	uerr := untar(pr, prefix, dst)
	pr.CloseWithError(io.ErrClosedPipe)
	if err := <-done; err != nil {
		return err
	}
	return uerr
}

// untar writes the archive's entries under prefix to dst, refusing any
// that would land outside it.
func untar(r io.Reader, prefix, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimLeft(path.Clean(h.Name), "/")
		rel, ok := strings.CutPrefix(name, prefix)
		if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
			continue
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if rel != "" && !strings.HasPrefix(target, filepath.Clean(dst)+string(filepath.Separator)) {
			return fmt.Errorf("illegal file path %q in the archive", h.Name)
		}
		mode := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			// kubectl skips links: one could point outside dst.
			fmt.Fprintf(os.Stderr, "warning: skipping symlink: %q -> %q\n", target, h.Linkname)
		}
	}
}

// copyToPod packs src as the base name of dst and unpacks it in dst's
// directory in the container with kubectl's `tar -xmf - -C dir`, which
// ends when the archive's stdin closes.
func (o *Options) copyToPod(ctx context.Context, src string, dst fileSpec, container string, noPreserve bool) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("%s doesn't exist in local filesystem", src)
	}
	pr, pw := io.Pipe()
	packed := make(chan error, 1)
	go func() {
		err := tarPath(pw, src, path.Base(path.Clean(dst.path)))
		pw.CloseWithError(err)
		packed <- err
	}()
	dir := path.Dir(path.Clean(dst.path))
	cmd := []string{"tar", "-xmf", "-", "-C", dir}
	if noPreserve {
		cmd = []string{"tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", dir}
	}
	err := o.execCapture(ctx, dst, container, cmd, pr, io.Discard)
	// A command that ended early stops the packing too.
	pr.Close()
	if perr := <-packed; perr != nil && perr != io.ErrClosedPipe {
		return perr
	}
	return err
}

// tarPath writes src (a file or a directory tree) named as name.
func tarPath(w io.Writer, src, name string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && !info.IsDir() {
			return nil
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = path.Join(name, filepath.ToSlash(rel))
		if info.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
