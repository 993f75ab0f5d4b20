// Package liveness is agnhost's liveness subcommand: a server that is
// healthy for its first ten seconds and unhealthy afterwards, so a liveness
// probe restarts its container.
package liveness

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"time"
)

// HealthyFor is how long after start /healthz answers 200.
const HealthyFor = 10 * time.Second

// Handler serves /healthz, /started and /redirect; now is the clock, started
// the moment the server came up.
func Handler(started time.Time, now func() time.Time) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/started", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, now().Sub(started).String())
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if d := now().Sub(started); d > HealthyFor {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "error: %v", d.Seconds())
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		loc, err := url.QueryUnescape(r.URL.Query().Get("loc"))
		if err != nil {
			http.Error(w, fmt.Sprintf("invalid redirect: %q", r.URL.Query().Get("loc")), http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, loc, http.StatusFound)
	})
	return mux
}

// Main runs `agnhost liveness` on port 8080, as upstream.
func Main(args []string) error {
	fs := flag.NewFlagSet("liveness", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log.Printf("Serving on :8080, healthy for %v", HealthyFor)
	return http.ListenAndServe(":8080", Handler(time.Now(), time.Now))
}
