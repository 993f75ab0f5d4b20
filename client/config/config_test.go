package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: ca.crt
contexts:
- name: dev
  context: {cluster: skiff, user: admin, namespace: team}
- name: broken
  context: {cluster: nowhere, user: admin}
current-context: dev
users:
- name: admin
  user: {}
`

func TestPathPrecedence(t *testing.T) {
	t.Setenv("SKIFFCONFIG", "/a/config:/b/config")
	if p := Path("/flag"); p != "/flag" {
		t.Errorf("flag: %s", p)
	}
	if p := Path(""); p != "/a/config" {
		t.Errorf("env: %s", p)
	}
	t.Setenv("SKIFFCONFIG", "")
	t.Setenv("HOME", "/home/u")
	if p := Path(""); p != "/home/u/.skiff/config" {
		t.Errorf("home: %s", p)
	}
}

func TestLoadResolveAndWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config")
	os.WriteFile(p, []byte(kubeconfig), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resolve(""); err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Fatalf("relative CA path must resolve against the file's directory: %v", err)
	}
	if _, err := c.Resolve("nope"); err == nil || err.Error() != `context "nope" not found in the client config` {
		t.Fatalf("unknown context: %v", err)
	}
	if _, err := c.Resolve("broken"); err == nil || !strings.Contains(err.Error(), `cluster "nowhere" not found`) {
		t.Fatalf("missing cluster: %v", err)
	}
	c.Clusters[0].Cluster.CertificateAuthority = ""
	r, err := c.Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	if r.Server != "127.0.0.1:6443" || r.Namespace != "team" || r.TLS.ServerName != "127.0.0.1" {
		t.Fatalf("resolved %+v", r)
	}
	out := filepath.Join(dir, "sub", "admin.conf")
	if err := NewAdmin("https://127.0.0.1:6443", []byte("ca"), nil, nil).Write(out); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(out)
	data, _ := os.ReadFile(out)
	if st.Mode().Perm() != 0o600 || !strings.Contains(string(data), "certificate-authority-data: Y2E=") || !strings.Contains(string(data), "current-context: admin@skiff") {
		t.Fatalf("written config (%v):\n%s", st.Mode(), data)
	}
}
