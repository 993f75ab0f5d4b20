//go:build tools

package e2e

import (
	_ "go.etcd.io/etcd/client/v3"
	_ "google.golang.org/grpc"
)
