package app

import (
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/manager"
)

// What a program embedding the controller-manager (integration tests,
// benchmarks) needs, as etcd's embed package gives etcd. The controllers
// stay in internal/.
type (
	// Config wires an embedded controller-manager: its client, the
	// --controllers selection, the controllers' options, metrics.
	Config = manager.Config
	// Manager runs the selected controllers until its context ends.
	Manager = manager.Manager
	// ControllerOptions are the controllers' flag values in a Config.
	ControllerOptions = controllers.Options
)

// New builds a controller-manager from cfg; Run runs it.
func New(cfg Config) (*Manager, error) { return manager.New(cfg) }
