// Package controllertest runs a controller against the fake clientset in a
// unit test: the Context, the shared informers started after the
// constructor registered its handlers, and a poll for the state the test
// expects.
package controllertest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
)

// Context is a controller Context over cs, with a fake recorder and a
// fresh registry.
func Context(cs *fake.Clientset, opts controllers.Options) (controllers.Context, *record.FakeRecorder) {
	rec := record.NewFakeRecorder(1000)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.Default()
	}
	return controllers.Context{
		Client:     cs.Client,
		Informers:  informers.NewFactory(cs.Client, informers.Options{Logger: log}),
		Recorder:   func(string) record.Recorder { return rec },
		Registerer: prometheus.NewRegistry(),
		Logger:     log,
		Options:    &opts,
		Now:        time.Now,
	}, rec
}

// Run starts the informers and c until the test ends.
func Run(t testing.TB, cc controllers.Context, c controllers.Controller) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	cc.Informers.Start(ctx)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", c.Name(), err)
		}
		cc.Informers.Shutdown()
	})
}

// Eventually polls cond for up to five seconds and fails the test with
// cond's last explanation if it never holds.
func Eventually(t testing.TB, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after 5s: %s", why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
