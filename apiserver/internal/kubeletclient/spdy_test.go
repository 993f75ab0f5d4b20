package kubeletclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"testing"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"

	"skiff.dev/apiserver/internal/pki"
)

func TestDialSPDYNegotiatesTheProtocolAndHalfCloses(t *testing.T) {
	b, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	k := kubelet(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("command") == "" {
			http.Error(w, "you must specify at least one command", http.StatusBadRequest)
			return
		}
		if r.Method != http.MethodPost || r.TLS.PeerCertificates[0].Subject.CommonName != "kube-apiserver-kubelet-client" {
			http.Error(w, "unexpected "+r.Method, http.StatusForbidden)
			return
		}
		if _, err := httpstream.Handshake(r, w, []string{"v4.channel.k8s.io"}); err != nil {
			return
		}
		// An echo: each stream's bytes come back once the client closes it.
		conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, sent <-chan struct{}) error {
			go func() {
				<-sent
				in, _ := io.ReadAll(s)
				s.Write(append([]byte(r.URL.Query()["command"][1]+":"), in...))
				s.Close()
			}()
			return nil
		})
		if conn != nil {
			<-conn.CloseChan()
		}
	}))
	node := nodeFor(t, k.Listener.Addr().String())
	c := New(Config{CertFile: b.KubeletClientCert, KeyFile: b.KubeletClientKey, CAFile: b.CACert})
	conn, proto, err := c.DialSPDY(context.Background(), node, "/exec/ns/p/c", url.Values{"command": {"echo", "hi"}}, []string{"v4.channel.k8s.io"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if proto != "v4.channel.k8s.io" {
		t.Errorf("protocol %q", proto)
	}
	s, err := conn.CreateStream(http.Header{"Streamtype": {"stdin"}})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(s, "abc")
	// Closing our half is the far end's EOF; its half stays open to answer.
	s.Close()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "hi:abc" {
		t.Errorf("read %q, %v", got, err)
	}

	_, _, err = c.DialSPDY(context.Background(), node, "/exec/ns/p/c", nil, []string{"v4.channel.k8s.io"})
	var ke *Error
	if !errors.As(err, &ke) || ke.Code != 400 || ke.Message != "you must specify at least one command" {
		t.Errorf("refused upgrade: %v", err)
	}
}
