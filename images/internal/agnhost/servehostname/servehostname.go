// Package servehostname is agnhost's serve-hostname subcommand: it answers
// every request with the pod's hostname over HTTP, raw TCP or UDP, which is
// how upstream's Service tests tell which backend answered.
package servehostname

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// HTTPHandler answers every path with hostname; with closeConn it asks the
// client to close the connection, so each request may reach another backend.
func HTTPHandler(hostname string, closeConn bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("HTTP request from %s", r.RemoteAddr)
		if closeConn {
			w.Header().Set("Connection", "close")
		}
		fmt.Fprint(w, hostname)
	})
}

// ServeTCP writes hostname to every connection l accepts, then closes it.
func ServeTCP(l net.Listener, hostname string) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		log.Printf("TCP request from %s", conn.RemoteAddr())
		conn.Write([]byte(hostname))
		conn.Close()
	}
}

// ServeUDP answers every datagram on conn with hostname.
func ServeUDP(conn net.PacketConn, hostname string) error {
	buf := make([]byte, 64)
	for {
		_, addr, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		log.Printf("UDP request from %s", addr)
		conn.WriteTo([]byte(hostname), addr)
	}
}

// Main runs `agnhost serve-hostname`.
func Main(args []string) error {
	fs := flag.NewFlagSet("serve-hostname", flag.ContinueOnError)
	doTCP := fs.Bool("tcp", false, "serve raw over TCP")
	doUDP := fs.Bool("udp", false, "serve raw over UDP")
	doHTTP := fs.Bool("http", true, "serve HTTP")
	doClose := fs.Bool("close", false, "close the connection after each HTTP request")
	port := fs.Int("port", 9376, "port number")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *doHTTP && (*doTCP || *doUDP) {
		return errors.New("can't serve TCP/UDP mode and HTTP mode at the same time")
	}
	hostname, err := os.Hostname()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf(":%d", *port)
	fail := make(chan error, 3)
	if *doTCP {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() { fail <- ServeTCP(l, hostname) }()
	}
	if *doUDP {
		conn, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		go func() { fail <- ServeUDP(conn, hostname) }()
	}
	if *doHTTP {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() { fail <- http.Serve(l, HTTPHandler(hostname, *doClose)) }()
	}
	log.Printf("Serving on port %d.", *port)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM)
	select {
	case err := <-fail:
		return err
	case sig := <-signals:
		// As upstream: keep serving while the pod is deleted, so tests see
		// the endpoint leave the Service before the backend goes away.
		log.Printf("Shutting down after receiving signal: %s.", sig)
		log.Printf("Awaiting pod deletion.")
		time.Sleep(60 * time.Second)
		return nil
	}
}
