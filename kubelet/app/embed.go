package app

import (
	"context"
	"time"

	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/nodestatus"
)

// What a program embedding kubelets needs (hollow nodes, integration
// tests), as etcd's embed package gives etcd: New(Config) takes a client
// and a runtime of the embedder's choosing, so many simulated nodes run in
// one process over fake runtimes (kubemark's idea). The parts stay in
// internal/.
//
//	k, err := app.New(app.Config{Options: *app.NewOptions(), NodeName: "hollow-1",
//		Client: c, Runtime: app.NewFakeRuntime(), Machine: fixed})
//	go k.Run(ctx)
type (
	// Runtime is a CRI runtime and image service.
	Runtime = cri.Runtime
	// Machine is what a node reports of its host.
	Machine = nodestatus.Machine
)

// DialRuntime connects to a CRI runtime's socket.
func DialRuntime(ctx context.Context, endpoint string, timeout time.Duration) (Runtime, error) {
	return cri.Dial(ctx, endpoint, timeout)
}

// NewFakeRuntime is an in-memory runtime (cri-api's fakes).
func NewFakeRuntime() Runtime { return cri.NewFake() }

// KubeletVersion is what nodes report as nodeInfo.kubeletVersion.
const KubeletVersion = nodestatus.KubeletVersion
