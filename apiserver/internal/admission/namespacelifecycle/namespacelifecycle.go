// Package namespacelifecycle is upstream's NamespaceLifecycle admission
// plugin: nothing is written into a namespace that does not exist, nothing
// new is created in one being deleted, and the namespaces the system lives
// in cannot be deleted.
package namespacelifecycle

import (
	"context"
	"fmt"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/proto/apierrors"
)

// PluginName is upstream's name for it.
const PluginName = "NamespaceLifecycle"

// immortal namespaces are upstream's: the system's own.
var immortal = map[string]bool{"default": true, "kube-system": true, "kube-public": true}

// Plugin is the NamespaceLifecycle plugin.
type Plugin struct {
	namespaces admission.NamespaceGetter
}

// New returns the plugin; the registry hands it a namespace getter.
func New() *Plugin { return &Plugin{} }

// Name is PluginName.
func (p *Plugin) Name() string { return PluginName }

// Handles every write.
func (p *Plugin) Handles(admission.Operation) bool { return true }

// SetNamespaceGetter is the registry's hook.
func (p *Plugin) SetNamespaceGetter(g admission.NamespaceGetter) { p.namespaces = g }

// Admit refuses writes into absent or terminating namespaces.
func (p *Plugin) Admit(ctx context.Context, a *admission.Attributes) error {
	isNamespace := a.Kind.Group == "" && a.Kind.Kind == "Namespace"
	if isNamespace {
		if a.Operation == admission.Delete && immortal[a.Name] {
			return apierrors.NewForbidden(a.Kind.GroupResource(), a.Name, "this namespace may not be deleted")
		}
		return nil
	}
	if !a.Kind.Namespaced || a.Operation == admission.Delete {
		return nil
	}
	if p.namespaces == nil {
		return apierrors.NewInternal(fmt.Errorf("%s: no namespace getter", PluginName))
	}
	ns, err := p.namespaces.Namespace(ctx, a.Namespace)
	if err != nil {
		return err
	}
	terminating := ns.GetStatus().GetPhase() == "Terminating" || ns.GetMetadata().GetDeletionTimestamp() != nil
	if a.Operation == admission.Create && a.Subresource == "" && terminating {
		return apierrors.NewForbidden(a.Kind.GroupResource(), a.Name,
			fmt.Sprintf("unable to create new content in namespace %s because it is being terminated", a.Namespace))
	}
	return nil
}
