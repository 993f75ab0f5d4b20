// Package serviceaccount is upstream's serviceaccount controller: every
// active namespace has a "default" ServiceAccount, recreated if deleted.
// Tokens are not minted here: ServiceAccount tokens are bound tokens the
// apiserver issues on request, as upstream since 1.24.
package serviceaccount

import (
	"context"
	"log/slog"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Name is upstream's --controllers alias.
const Name = "serviceaccount"

// desired are the accounts every namespace gets (upstream's default
// ServiceAccountsControllerOptions).
var desired = []string{"default"}

// Controller keeps the desired accounts in every namespace.
type Controller struct {
	client     *client.Client
	namespaces informers.Lister[*corev1.Namespace]
	accounts   informers.Lister[*corev1.ServiceAccount]
	queue      workqueue.Queue
	synced     []informer.Registration
	log        *slog.Logger
}

// New builds the controller; its queue holds namespace names.
func New(cc controllers.Context) (controllers.Controller, error) {
	ns := informers.For[*corev1.Namespace](cc.Informers)
	sa := informers.For[*corev1.ServiceAccount](cc.Informers)
	c := &Controller{client: cc.Client, namespaces: ns.Lister(), accounts: sa.Lister(),
		queue: workqueue.NewWithMetrics("serviceaccount", cc.Registerer), log: cc.Log()}
	enqueueNS := func(o scheme.Object) { c.queue.Add(o.GetMetadata().GetName()) }
	c.synced = append(c.synced,
		ns.Informer().AddHandler(informer.Handler{
			OnAdd:    enqueueNS,
			OnUpdate: func(_, o scheme.Object) { enqueueNS(o) },
		}),
		// A deleted account is recreated; an edited one is left as the user
		// wants it.
		sa.Informer().AddHandler(informer.Handler{
			OnDelete: func(o scheme.Object) { c.queue.Add(o.GetMetadata().GetNamespace()) },
		}))
	return c, nil
}

func (c *Controller) Name() string { return Name }

// Run works one namespace at a time, as upstream runs this controller.
func (c *Controller) Run(ctx context.Context) error {
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		return nil
	}
	controller.Run(ctx, c.queue, 1, c.reconcile, c.log)
	return nil
}

func (c *Controller) reconcile(ctx context.Context, name string) error {
	ns, err := c.namespaces.Get("", name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.GetStatus().GetPhase() == "Terminating" || ns.GetMetadata().GetDeletionTimestamp() != nil {
		return nil // a terminating namespace admits no new objects
	}
	for _, sa := range desired {
		if _, err := c.accounts.Get(name, sa); err == nil {
			continue
		}
		_, err := client.For[*corev1.ServiceAccount](c.client, name).Create(ctx,
			&corev1.ServiceAccount{Metadata: &metav1.ObjectMeta{Name: sa, Namespace: name}})
		switch {
		case err == nil:
			c.log.Info("created service account", "namespace", name, "name", sa)
		case apierrors.IsAlreadyExists(err):
			// The cache lagged the create of another writer.
		case apierrors.IsNotFound(err) || apierrors.IsForbidden(err) && terminating(c.namespaces, name):
			// The namespace went, or began terminating, since the cache saw it.
		default:
			return err
		}
	}
	return nil
}

// terminating re-reads the cache: a Forbidden create into a namespace that
// is being deleted is expected, not an error to retry.
func terminating(l informers.Lister[*corev1.Namespace], name string) bool {
	ns, err := l.Get("", name)
	return err != nil || ns.GetStatus().GetPhase() == "Terminating" || ns.GetMetadata().GetDeletionTimestamp() != nil
}
