//go:build tools

// Pins the libraries the apiserver is built on until code imports them all.
package apiserver

import (
	_ "github.com/evanphx/json-patch/v5"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "google.golang.org/grpc"
	_ "k8s.io/apimachinery/pkg/util/validation/field"
)
