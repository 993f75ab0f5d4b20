//go:build tools

package ctl

import (
	_ "github.com/evanphx/json-patch/v5"
	_ "github.com/spf13/cobra"
	_ "google.golang.org/grpc"
	_ "sigs.k8s.io/yaml"
)
