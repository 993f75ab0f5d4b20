// Package rootcacertpublisher is upstream's root-ca-cert-publisher: the
// ConfigMap kube-root-ca.crt in every namespace holds the cluster CA, so a
// pod can verify the apiserver with the CA its projected token volume
// mounts. An edited or deleted copy is put back.
package rootcacertpublisher

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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
const Name = "root-ca-cert-publisher"

// Upstream's ConfigMap name, key and description.
const (
	ConfigMapName         = "kube-root-ca.crt"
	DataKey               = "ca.crt"
	DescriptionAnnotation = "kubernetes.io/description"
	Description           = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. " +
		"No other usage is guaranteed across distributions of Kubernetes clusters."
)

// Controller publishes the root CA.
type Controller struct {
	client     *client.Client
	rootCA     string
	namespaces informers.Lister[*corev1.Namespace]
	configMaps informers.Lister[*corev1.ConfigMap]
	queue      workqueue.Queue
	synced     []informer.Registration
	log        *slog.Logger
	syncs      *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

// New builds the publisher; its queue holds namespace names.
func New(cc controllers.Context) (controllers.Controller, error) {
	if len(cc.Options.RootCA) == 0 {
		return nil, errors.New("no root CA to publish: give --root-ca-file or a client config with certificate-authority data")
	}
	ns := informers.For[*corev1.Namespace](cc.Informers)
	cm := informers.For[*corev1.ConfigMap](cc.Informers)
	c := &Controller{client: cc.Client, rootCA: string(cc.Options.RootCA), namespaces: ns.Lister(), configMaps: cm.Lister(),
		queue: workqueue.NewWithMetrics("root_ca_cert_publisher", cc.Registerer), log: cc.Log(),
		syncs: register(cc.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "root_ca_cert_publisher_sync_total", Help: "Number of namespace syncs happened in root ca cert publisher.",
		}, []string{"code"})),
		duration: register(cc.Registerer, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "root_ca_cert_publisher_sync_duration_seconds", Help: "Number of namespace syncs happened in root ca cert publisher.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"code"})),
	}
	enqueueNS := func(o scheme.Object) { c.queue.Add(o.GetMetadata().GetName()) }
	ours := func(o scheme.Object) {
		if o.GetMetadata().GetName() == ConfigMapName {
			c.queue.Add(o.GetMetadata().GetNamespace())
		}
	}
	c.synced = append(c.synced,
		ns.Informer().AddHandler(informer.Handler{OnAdd: enqueueNS, OnUpdate: func(_, o scheme.Object) { enqueueNS(o) }}),
		cm.Informer().AddHandler(informer.Handler{OnUpdate: func(_, o scheme.Object) { ours(o) }, OnDelete: ours}))
	return c, nil
}

func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

func (c *Controller) Name() string { return Name }

// Run works one namespace at a time, as upstream.
func (c *Controller) Run(ctx context.Context) error {
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		return nil
	}
	controller.Run(ctx, c.queue, 1, c.reconcile, c.log)
	return nil
}

func (c *Controller) reconcile(ctx context.Context, ns string) (err error) {
	start := time.Now()
	defer func() {
		code := status.Code(err).String()
		c.syncs.WithLabelValues(code).Inc()
		c.duration.WithLabelValues(code).Observe(time.Since(start).Seconds())
	}()
	n, err := c.namespaces.Get("", ns)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if n.GetStatus().GetPhase() == "Terminating" || n.GetMetadata().GetDeletionTimestamp() != nil {
		return nil
	}
	want := map[string]string{DataKey: c.rootCA}
	cms := client.For[*corev1.ConfigMap](c.client, ns)
	cm, err := c.configMaps.Get(ns, ConfigMapName)
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			Metadata: &metav1.ObjectMeta{Name: ConfigMapName, Namespace: ns, Annotations: map[string]string{DescriptionAnnotation: Description}},
			Data:     want,
		})
		if apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) || apierrors.IsForbidden(err) && terminating(c.namespaces, ns) {
			return nil // the cache lagged, or the namespace is going
		}
		return err
	}
	if err != nil {
		return err
	}
	if maps.Equal(cm.GetData(), want) && cm.GetMetadata().GetAnnotations()[DescriptionAnnotation] != "" {
		return nil
	}
	cm = proto.Clone(cm).(*corev1.ConfigMap)
	cm.Data = want
	cm.BinaryData = nil
	if cm.Metadata.Annotations == nil {
		cm.Metadata.Annotations = map[string]string{}
	}
	cm.Metadata.Annotations[DescriptionAnnotation] = Description
	// The cache's resourceVersion guards the write: a newer edit conflicts
	// and the retry reads it.
	_, err = cms.Update(ctx, cm)
	return err
}

func terminating(l informers.Lister[*corev1.Namespace], name string) bool {
	ns, err := l.Get("", name)
	return err != nil || ns.GetStatus().GetPhase() == "Terminating" || ns.GetMetadata().GetDeletionTimestamp() != nil
}
