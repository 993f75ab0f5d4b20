// Package controller holds what every reconcile loop needs beside its
// informers, as upstream's k8s.io/kubernetes/pkg/controller and client-go's
// helpers give it: queue keys, the worker loop over a rate-limited queue,
// retry on conflict, owner references and claiming, and expectations.
package controller

import (
	"fmt"
	"strings"

	"skiff.dev/client/informer"
	"skiff.dev/proto/scheme"
)

// KeyFunc is the queue key of an object, the same key its informer stores it
// under: "namespace/name", or "name" when cluster-scoped.
func KeyFunc(obj scheme.Object) string { return informer.Key(obj) }

// SplitMetaNamespaceKey splits a key made by KeyFunc, as client-go's
// cache.SplitMetaNamespaceKey: "name" has no namespace, more than one slash is
// an error.
func SplitMetaNamespaceKey(key string) (namespace, name string, err error) {
	parts := strings.Split(key, "/")
	switch len(parts) {
	case 1:
		return "", parts[0], nil
	case 2:
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("unexpected key format: %q", key)
}
