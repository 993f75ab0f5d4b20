package nodes

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/ctl/app"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// TestStreamsThroughSkiffctl runs an agnhost pod on a real node and reads
// its log, runs commands in it, copies files in and out and forwards a port
// to it, every one through skiffctl → apiserver → kubelet → containerd.
func TestStreamsThroughSkiffctl(t *testing.T) {
	c, cl := kubeletClusterN(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pods := client.For[*corev1.Pod](cl, "default")
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "streams"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{agnhost("web")}}}
	if _, err := pods.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the pod is ready", func() (bool, string) {
		p, err := pods.Get(ctx, "streams")
		if err != nil {
			return false, err.Error()
		}
		return condition(p, "Ready") == "True", p.GetStatus().String()
	})
	skiffctl := func(stdin string, args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := app.Run(ctx, app.Streams{In: strings.NewReader(stdin), Out: &out, Err: &errb}, append([]string{"--kubeconfig", c.Kubeconfig()}, args...))
		return out.String(), errb.String(), code
	}

	t.Run("logs", func(t *testing.T) {
		out, errOut, code := skiffctl("", "logs", "streams")
		if code != 0 || !strings.Contains(out, "Started HTTP server on port 8080") {
			t.Errorf("logs: %d %q %q", code, out, errOut)
		}
	})

	t.Run("exec", func(t *testing.T) {
		out, errOut, code := skiffctl("", "exec", "streams", "--", "sh", "-c", "echo hi; echo oops >&2")
		if code != 0 || out != "hi\n" || errOut != "oops\n" {
			t.Errorf("exec echo: %d %q %q", code, out, errOut)
		}
		out, errOut, code = skiffctl("", "exec", "streams", "--", "sh", "-c", "exit 3")
		if code != 3 || out != "" || errOut != "command terminated with exit code 3\n" {
			t.Errorf("exec exit 3: %d %q %q", code, out, errOut)
		}
		// echo hello | skiffctl exec -i streams -- cat: the end of skiffctl's
		// stdin closes the command's, so cat ends.
		// A cat left waiting is cut off by the deadline and fails.
		catCtx, catCancel := context.WithTimeout(ctx, 10*time.Second)
		var catOut, catErr bytes.Buffer
		code = app.Run(catCtx, app.Streams{In: strings.NewReader("hello\n"), Out: &catOut, Err: &catErr},
			[]string{"--kubeconfig", c.Kubeconfig(), "exec", "-i", "streams", "--", "cat"})
		late := catCtx.Err()
		catCancel()
		if code != 0 || catOut.String() != "hello\n" || late != nil {
			t.Errorf("echo hello | exec -i cat: %d %q %q (%v)", code, catOut.String(), catErr.String(), late)
		}
		out, errOut, code = skiffctl("", "exec", "streams", "--", "/no/such/binary")
		if code != 1 || !strings.Contains(errOut, "no/such/binary") {
			t.Errorf("exec of a missing binary: %d %q %q", code, out, errOut)
		}
		out, errOut, code = skiffctl("", "exec", "streams", "-c", "nope", "--", "true")
		if code != 1 || !strings.Contains(errOut, "container nope is not valid for pod streams") {
			t.Errorf("exec -c nope: %d %q %q", code, out, errOut)
		}
	})

	t.Run("run and attach", func(t *testing.T) {
		// run -i --rm --restart=Never: the command's output and exit code,
		// and the pod gone afterwards.
		out, errOut, code := skiffctl("", "run", "once", "-i", "--rm", "--restart=Never", "--image="+busyboxImage, "--", "sh", "-c", "echo from-run; exit 4")
		if code != 4 || !strings.Contains(out, "from-run") {
			t.Errorf("run -i --rm: %d %q %q", code, out, errOut)
		}
		eventually(t, 30*time.Second, "the --rm pod deleted", func() (bool, string) {
			_, err := pods.Get(ctx, "once")
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		// attach to a running container's main process: its output streams.
		if _, errOut, code := skiffctl("", "run", "ticker", "--image="+busyboxImage, "--", "sh", "-c", "while true; do echo tick; sleep 0.2; done"); code != 0 {
			t.Fatalf("run ticker: %d %q", code, errOut)
		}
		eventually(t, 60*time.Second, "ticker running", func() (bool, string) {
			p, err := pods.Get(ctx, "ticker")
			return err == nil && p.GetStatus().GetPhase() == "Running", fmt.Sprint(err)
		})
		attachCtx, attachCancel := context.WithTimeout(ctx, 2*time.Second)
		var aOut, aErr bytes.Buffer
		app.Run(attachCtx, app.Streams{In: strings.NewReader(""), Out: &aOut, Err: &aErr}, []string{"--kubeconfig", c.Kubeconfig(), "attach", "ticker"})
		attachCancel()
		if !strings.Contains(aOut.String(), "tick\ntick\n") {
			t.Errorf("attach ticker: %q %q", aOut.String(), aErr.String())
		}
	})

	t.Run("cp", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "in")
		os.MkdirAll(filepath.Join(src, "sub"), 0o755)
		os.WriteFile(filepath.Join(src, "sub", "f.txt"), []byte("copied\n"), 0o644)
		if out, errOut, code := skiffctl("", "cp", src, "streams:/tmp/data"); code != 0 {
			t.Fatalf("cp in: %d %q %q", code, out, errOut)
		}
		if out, errOut, code := skiffctl("", "exec", "streams", "--", "cat", "/tmp/data/sub/f.txt"); code != 0 || out != "copied\n" {
			t.Errorf("the copied file in the pod: %d %q %q", code, out, errOut)
		}
		back := filepath.Join(dir, "back")
		if out, errOut, code := skiffctl("", "cp", "default/streams:/tmp/data", back); code != 0 {
			t.Fatalf("cp out: %d %q %q", code, out, errOut)
		}
		if b, err := os.ReadFile(filepath.Join(back, "sub", "f.txt")); err != nil || string(b) != "copied\n" {
			t.Errorf("copied back: %q, %v", b, err)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		pr, pw := io.Pipe()
		done := make(chan int, 1)
		go func() {
			code := app.Run(pctx, app.Streams{In: strings.NewReader(""), Out: pw, Err: os.Stderr},
				[]string{"--kubeconfig", c.Kubeconfig(), "port-forward", "pod/streams", ":8080"})
			pw.Close()
			done <- code
		}()
		line, err := bufio.NewReader(pr).ReadString('\n')
		go io.Copy(io.Discard, pr)
		m := regexp.MustCompile(`^Forwarding from (127\.0\.0\.1:\d+) -> 8080\n$`).FindStringSubmatch(line)
		if err != nil || m == nil {
			t.Fatalf("port-forward printed %q (%v)", line, err)
		}
		hc := &http.Client{Timeout: 10 * time.Second}
		for i := 0; i < 2; i++ { // one stream per connection: a second works as the first
			resp, err := hc.Get("http://" + m[1] + "/hostname")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "streams" {
				t.Errorf("GET /hostname through the forward: %q", b)
			}
			hc.CloseIdleConnections()
		}
		stop()
		if code := <-done; code != 0 {
			t.Errorf("port-forward exited %d after Ctrl-C", code)
		}
	})
}
