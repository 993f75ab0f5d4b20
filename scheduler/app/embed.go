package app

import "skiff.dev/scheduler/internal/scheduler"

// What a program embedding the scheduler (integration tests, skiff-local)
// needs, as etcd's embed package gives etcd: the configuration the flags and
// --config become, and the scheduler itself. The scheduling logic stays in
// internal/.
type (
	// Config wires an embedded scheduler: its client, profiles, metrics.
	Config = scheduler.Config
	// Profile is one schedulerName's plugins and their configuration.
	Profile = scheduler.Profile
	// PluginConfig is one plugin's arguments in a Profile.
	PluginConfig = scheduler.PluginConfig
	// Scheduler is a scheduler to Run until its context ends.
	Scheduler = scheduler.Scheduler
)

// DiagnosisAnnotation holds, on a pending pod, what each plugin said of each node.
const DiagnosisAnnotation = scheduler.DiagnosisAnnotation

// New builds a scheduler from cfg; Run schedules until ctx ends.
func New(cfg Config) (*Scheduler, error) { return scheduler.New(cfg) }
