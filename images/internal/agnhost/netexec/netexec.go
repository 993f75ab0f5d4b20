// Package netexec is agnhost's netexec subcommand: an HTTP server and a UDP
// server whose endpoints let a test ask a pod who it is, who is calling it,
// and to dial other pods, as upstream's test/images/agnhost/netexec does.
package netexec

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// ShutdownRequest is what /exit asks of the process: wait, then give open
// connections Timeout to finish, then exit with Code.
type ShutdownRequest struct {
	Code    int
	Timeout time.Duration
	Wait    time.Duration
}

// Server holds the state the handlers share.
type Server struct {
	// Hostname answers /hostname and the UDP "hostname" command.
	Hostname func() (string, error)
	// ShellPath runs /shell commands through `ShellPath -c`; when the file
	// does not exist the command is split on spaces and executed directly,
	// so the endpoint still works in images without a shell.
	ShellPath string
	// Exit receives /exit and /shutdown requests after their response is
	// written; Main turns them into a graceful shutdown and os.Exit.
	Exit chan ShutdownRequest

	ready atomic.Bool
}

// NewServer returns a Server with upstream's defaults.
func NewServer() *Server {
	return &Server{Hostname: os.Hostname, ShellPath: "/bin/sh", Exit: make(chan ShutdownRequest, 1)}
}

// SetReady marks the server ready: /healthz and /readyz answer 200 from then
// on. Upstream becomes ready once its UDP server listens.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Handler returns the HTTP endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "NOW: %v", time.Now())
	})
	mux.HandleFunc("/clientip", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.RemoteAddr)
	})
	mux.HandleFunc("/dial", s.dial)
	mux.HandleFunc("/echo", echo)
	mux.HandleFunc("/exit", s.exit)
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/readyz", s.healthz)
	mux.HandleFunc("/header", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get(r.FormValue("key")))
	})
	mux.HandleFunc("/hostname", s.hostname)
	mux.HandleFunc("/hostName", s.hostname)
	mux.HandleFunc("/redirect", redirect)
	mux.HandleFunc("/shell", s.shell)
	mux.HandleFunc("/shutdown", func(w http.ResponseWriter, r *http.Request) {
		s.requestExit(ShutdownRequest{})
	})
	return mux
}

func (s *Server) hostname(w http.ResponseWriter, r *http.Request) {
	name, err := s.Hostname()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	io.WriteString(w, name)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		w.WriteHeader(http.StatusPreconditionFailed)
		return
	}
	io.WriteString(w, "ok")
}

func echo(w http.ResponseWriter, r *http.Request) {
	if c := r.FormValue("code"); c != "" {
		code, err := strconv.Atoi(c)
		if err != nil || code < 100 || code > 999 {
			http.Error(w, fmt.Sprintf("argument 'code' must be an HTTP status code or empty, got %q", c), http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
	}
	io.WriteString(w, r.FormValue("msg"))
}

func redirect(w http.ResponseWriter, r *http.Request) {
	code := http.StatusFound
	if c := r.FormValue("code"); c != "" {
		var err error
		if code, err = strconv.Atoi(c); err != nil || code < 300 || code > 399 {
			http.Error(w, fmt.Sprintf("argument 'code' must be a 3xx status code or empty, got %q", c), http.StatusBadRequest)
			return
		}
	}
	http.Redirect(w, r, r.FormValue("location"), code)
}

func (s *Server) exit(w http.ResponseWriter, r *http.Request) {
	var req ShutdownRequest
	var err error
	if v := r.FormValue("code"); v != "" {
		if req.Code, err = strconv.Atoi(v); err != nil || req.Code < 0 || req.Code > 127 {
			http.Error(w, fmt.Sprintf("argument 'code' must be an integer [0-127] or empty, got %q", v), http.StatusBadRequest)
			return
		}
	}
	if v := r.FormValue("timeout"); v != "" {
		if req.Timeout, err = time.ParseDuration(v); err != nil {
			http.Error(w, fmt.Sprintf("argument 'timeout' must be a valid golang duration or empty, got %q", v), http.StatusBadRequest)
			return
		}
	}
	if v := r.FormValue("wait"); v != "" {
		if req.Wait, err = time.ParseDuration(v); err != nil {
			http.Error(w, fmt.Sprintf("argument 'wait' must be a valid golang duration or empty, got %q", v), http.StatusBadRequest)
			return
		}
	}
	fmt.Fprintf(w, "exiting with code %d", req.Code)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.requestExit(req)
}

// requestExit never blocks a handler: a second /exit while the first is
// being carried out has nothing to add.
func (s *Server) requestExit(req ShutdownRequest) {
	select {
	case s.Exit <- req:
	default:
	}
}

func (s *Server) shell(w http.ResponseWriter, r *http.Request) {
	cmdline := r.FormValue("shellCommand")
	if cmdline == "" {
		cmdline = r.FormValue("cmd")
	}
	var cmd *exec.Cmd
	if _, err := os.Stat(s.ShellPath); err == nil {
		cmd = exec.CommandContext(r.Context(), s.ShellPath, "-c", cmdline)
	} else if fields := strings.Fields(cmdline); len(fields) > 0 {
		cmd = exec.CommandContext(r.Context(), fields[0], fields[1:]...)
	}
	out := map[string]string{}
	if cmd == nil {
		out["error"] = "no command given"
	} else {
		b, err := cmd.CombinedOutput()
		if len(b) > 0 {
			out["output"] = string(b)
		}
		if err != nil {
			out["error"] = err.Error()
		}
	}
	writeJSON(w, out)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, fmt.Sprintf("response could not be serialized. %v", err), http.StatusExpectationFailed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// dial makes `tries` requests from this pod to host:port and reports each
// answer, which is how upstream's e2e checks pod-to-pod and pod-to-service
// connectivity from inside the cluster.
func (s *Server) dial(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	host, port, request := q.Get("host"), q.Get("port"), q.Get("request")
	tries := 1
	if v := q.Get("tries"); v != "" {
		var err error
		if tries, err = strconv.Atoi(v); err != nil || tries < 1 {
			http.Error(w, fmt.Sprintf("tries parameter is invalid: %q", v), http.StatusBadRequest)
			return
		}
	}
	if request == "" {
		http.Error(w, "request parameter not specified", http.StatusBadRequest)
		return
	}
	hostPort := net.JoinHostPort(host, port)
	var dialer func(ctx context.Context, request, hostPort string) (string, error)
	switch strings.ToLower(q.Get("protocol")) {
	case "", "http":
		if _, err := net.ResolveTCPAddr("tcp", hostPort); err != nil {
			http.Error(w, fmt.Sprintf("host and/or port param are invalid. %v", err), http.StatusBadRequest)
			return
		}
		dialer = dialHTTP
	case "udp":
		if _, err := net.ResolveUDPAddr("udp", hostPort); err != nil {
			http.Error(w, fmt.Sprintf("host and/or port param are invalid. %v", err), http.StatusBadRequest)
			return
		}
		dialer = dialUDP
	default:
		http.Error(w, fmt.Sprintf("unsupported protocol. %s", q.Get("protocol")), http.StatusBadRequest)
		return
	}
	out := map[string][]string{}
	for i := 0; i < tries; i++ {
		resp, err := dialer(r.Context(), request, hostPort)
		if err != nil {
			out["errors"] = append(out["errors"], err.Error())
			continue
		}
		out["responses"] = append(out["responses"], resp)
	}
	writeJSON(w, out)
}

func dialHTTP(ctx context.Context, request, hostPort string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostPort+"/"+strings.TrimPrefix(request, "/"), nil)
	if err != nil {
		return "", err
	}
	// A transport per request so every try opens its own connection, and a
	// Service's load balancing is seen as upstream's test expects.
	transport := &http.Transport{DisableKeepAlives: true}
	defer transport.CloseIdleConnections()
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func dialUDP(ctx context.Context, request, hostPort string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", hostPort)
	if err != nil {
		return "", fmt.Errorf("udp dial failed. err:%v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(request)); err != nil {
		return "", fmt.Errorf("udp connection write failed. err:%v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil || n == 0 {
		return "", fmt.Errorf("reading from udp connection failed. err:'%v'", err)
	}
	return string(buf[:n]), nil
}

// ServeUDP answers the commands "hostname", "echo <msg>" and "clientip" on
// conn until it is closed.
func (s *Server) ServeUDP(conn net.PacketConn) error {
	buf := make([]byte, 2048)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		text := strings.TrimSpace(string(buf[:n]))
		var resp string
		switch cmd := strings.ToLower(text); {
		case cmd == "hostname":
			if resp, err = s.Hostname(); err != nil {
				log.Printf("hostname: %v", err)
				continue
			}
		case strings.HasPrefix(cmd, "echo "):
			resp = text[len("echo "):]
		case cmd == "clientip":
			resp = addr.String()
		default:
			if text != "" {
				log.Printf("unknown UDP command from %s: %q", addr, text)
			}
			continue
		}
		if _, err := conn.WriteTo([]byte(resp), addr); err != nil {
			log.Printf("UDP reply to %s: %v", addr, err)
		}
	}
}

// Main runs `agnhost netexec` with its command-line arguments.
func Main(args []string) error {
	fs := flag.NewFlagSet("netexec", flag.ContinueOnError)
	httpPort := fs.Int("http-port", 8080, "HTTP listen port")
	udpPort := fs.Int("udp-port", 8081, "UDP listen port; -1 disables the UDP server")
	udpAddrs := fs.String("udp-listen-addresses", "", "comma-separated IP addresses the UDP server listens on (default: all)")
	certFile := fs.String("tls-cert-file", "", "x509 certificate for HTTPS (CA certificates, if any, after the server's)")
	keyFile := fs.String("tls-private-key-file", "", "private key matching --tls-cert-file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("netexec takes no arguments, got %q", fs.Args())
	}

	s := NewServer()
	if *udpPort == -1 {
		s.SetReady(true)
	} else {
		hosts := []string{""}
		if *udpAddrs != "" {
			hosts = strings.Split(*udpAddrs, ",")
		}
		for _, h := range hosts {
			if h != "" && net.ParseIP(h) == nil {
				return fmt.Errorf("invalid --udp-listen-addresses entry %q", h)
			}
			conn, err := net.ListenPacket("udp", net.JoinHostPort(h, strconv.Itoa(*udpPort)))
			if err != nil {
				return err
			}
			log.Printf("Started UDP server on %s", conn.LocalAddr())
			go func() {
				err := s.ServeUDP(conn)
				s.SetReady(false)
				log.Fatalf("UDP server on %s exited: %v", conn.LocalAddr(), err)
			}()
		}
		s.SetReady(true)
	}

	srv := &http.Server{Addr: fmt.Sprintf(":%d", *httpPort), Handler: s.Handler()}
	go func() {
		req := <-s.Exit
		time.Sleep(req.Wait)
		// Even with no timeout asked for, let the /exit response reach its
		// caller before the process goes.
		timeout := max(req.Timeout, time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := srv.Shutdown(ctx)
		cancel()
		log.Printf("Shutdown (%v), exiting with %d", err, req.Code)
		os.Exit(req.Code)
	}()
	log.Printf("Started HTTP server on port %d", *httpPort)
	var err error
	if *certFile != "" {
		err = srv.ListenAndServeTLS(*certFile, *keyFile)
	} else {
		err = srv.ListenAndServe()
	}
	if errors.Is(err, http.ErrServerClosed) {
		select {} // the shutdown goroutine exits the process
	}
	return err
}
