package kuberuntime

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Waiting reasons upstream's kubelet reports for containers it could not run.
const (
	ReasonContainerCreating          = "ContainerCreating"
	ReasonPodInitializing            = "PodInitializing"
	ReasonErrImagePull               = "ErrImagePull"
	ReasonImagePullBackOff           = "ImagePullBackOff"
	ReasonErrImageNeverPull          = "ErrImageNeverPull"
	ReasonInvalidImageName           = "InvalidImageName"
	ReasonCreateContainerConfigError = "CreateContainerConfigError"
	ReasonCreateContainerError       = "CreateContainerError"
	ReasonCrashLoopBackOff           = "CrashLoopBackOff"
	ReasonRunContainerError          = "RunContainerError"
	ReasonPostStartHookError         = "PostStartHookError"
)

// Waiting is why a container is not running, for the pod's status.
type Waiting struct{ Reason, Message string }

// syncError carries a Waiting reason out of a start attempt.
type syncError struct {
	Waiting
	retryAfter time.Duration
}

func (e *syncError) Error() string { return e.Reason + ": " + e.Message }

func waitingOf(err error) (Waiting, bool) {
	var se *syncError
	if errors.As(err, &se) {
		return se.Waiting, true
	}
	return Waiting{}, false
}

// pullPolicy is imagePullPolicy with the apiserver's default in case the
// pod came without it (static pods): Always for :latest or no tag.
func pullPolicy(c *corev1.Container) string {
	if p := c.GetImagePullPolicy(); p != "" {
		return p
	}
	img := c.GetImage()
	if i := strings.Index(img, "@"); i >= 0 {
		return "IfNotPresent"
	}
	last := img[strings.LastIndex(img, "/")+1:]
	if !strings.Contains(last, ":") || strings.HasSuffix(last, ":latest") {
		return "Always"
	}
	return "IfNotPresent"
}

// EnsureImage makes c's image present as upstream's image manager does:
// ImageStatus first (a CRI pull always contacts the registry), a pull when
// the policy asks for one, credentials from the pod's imagePullSecrets, and
// a back-off per pod and image after a failed pull. It returns the image
// reference to create the container from.
func (m *Manager) EnsureImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container, sandbox *runtimeapi.PodSandboxConfig) (string, error) {
	image := c.GetImage()
	if image == "" {
		return "", &syncError{Waiting: Waiting{ReasonInvalidImageName, fmt.Sprintf("Failed to apply default image tag %q: couldn't parse image name %q: invalid reference format", image, image)}}
	}
	spec := &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: image}
	policy := pullPolicy(c)
	if policy != "Always" {
		st, err := m.o.Runtime.ImageStatus(ctx, spec, false)
		if err != nil {
			m.o.Recorder.Eventf(pod, record.Warning, "InspectFailed", "Failed to inspect image %q: %v", image, err)
			return "", &syncError{Waiting: Waiting{"ImageInspectError", fmt.Sprintf("Failed to inspect image %q: %v", image, err)}}
		}
		if st.GetImage() != nil {
			m.o.Recorder.Eventf(pod, record.Normal, "Pulled", "Container image %q already present on machine", image)
			return st.GetImage().GetId(), nil
		}
		if policy == "Never" {
			msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", image)
			m.o.Recorder.Event(pod, record.Warning, "ErrImageNeverPull", msg)
			return "", &syncError{Waiting: Waiting{ReasonErrImageNeverPull, msg}}
		}
	}
	key := pod.GetMetadata().GetUid() + "_" + image
	now := m.o.Now()
	if m.o.ImageBackoff.IsInBackOffSinceUpdate(key, now) {
		msg := fmt.Sprintf("Back-off pulling image %q", image)
		m.o.Recorder.Event(pod, record.Normal, "BackOff", msg)
		return "", &syncError{Waiting{ReasonImagePullBackOff, msg}, m.o.ImageBackoff.Get(key)}
	}
	m.o.Recorder.Eventf(pod, record.Normal, "Pulling", "Pulling image %q", image)
	start := time.Now()
	ref, err := m.pull(ctx, pod, spec, sandbox)
	if err != nil {
		m.o.ImageBackoff.Next(key, now)
		m.o.Recorder.Eventf(pod, record.Warning, "Failed", "Failed to pull image %q: %v", image, err)
		return "", &syncError{Waiting{ReasonErrImagePull, err.Error()}, m.o.ImageBackoff.Get(key)}
	}
	took := time.Since(start).Round(time.Millisecond)
	var size uint64
	if st, err := m.o.Runtime.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false); err == nil {
		size = st.GetImage().GetSize()
	}
	m.o.Recorder.Eventf(pod, record.Normal, "Pulled", "Successfully pulled image %q in %v (%v including waiting). Image size: %d bytes.", image, took, took, size)
	return ref, nil
}

// pull tries each matching credential in turn, then none, as upstream's
// keyring lookup does.
func (m *Manager) pull(ctx context.Context, pod *corev1.Pod, spec *runtimeapi.ImageSpec, sandbox *runtimeapi.PodSandboxConfig) (string, error) {
	auths := m.pullAuths(pod, spec.Image)
	if len(auths) == 0 {
		return m.o.Runtime.PullImage(ctx, spec, nil, sandbox)
	}
	var errs []error
	for _, a := range auths {
		ref, err := m.o.Runtime.PullImage(ctx, spec, a, sandbox)
		if err == nil {
			return ref, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

type dockerConfigEntry struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Auth     string `json:"auth"`
	Email    string `json:"email"`
}

// pullAuths are the credentials of the pod's imagePullSecrets that match
// image's registry, longest (most specific) match first.
func (m *Manager) pullAuths(pod *corev1.Pod, image string) []*runtimeapi.AuthConfig {
	if m.o.Secret == nil {
		return nil
	}
	type match struct {
		n int
		a *runtimeapi.AuthConfig
	}
	var matches []match
	ref := imageRepository(image)
	for _, ps := range pod.GetSpec().GetImagePullSecrets() {
		s, err := m.o.Secret(pod.GetMetadata().GetNamespace(), ps.GetName())
		if err != nil {
			m.o.Logger.Info("image pull secret unavailable", "pod", FormatPod(pod), "secret", ps.GetName(), "err", err)
			continue
		}
		entries := map[string]dockerConfigEntry{}
		switch s.GetType() {
		case "kubernetes.io/dockerconfigjson":
			var cfg struct {
				Auths map[string]dockerConfigEntry `json:"auths"`
			}
			if json.Unmarshal(s.GetData()[".dockerconfigjson"], &cfg) == nil {
				entries = cfg.Auths
			}
		case "kubernetes.io/dockercfg":
			_ = json.Unmarshal(s.GetData()[".dockercfg"], &entries)
		}
		for registry, e := range entries {
			key := normalizeRegistry(registry)
			if ref != key && !strings.HasPrefix(ref, key+"/") {
				continue
			}
			// No ServerAddress, as upstream's keyring: containerd 1.6 parses
			// it as a URL, and a bare "host:port" key does not parse.
			a := &runtimeapi.AuthConfig{Username: e.Username, Password: e.Password}
			if e.Auth != "" && a.Username == "" {
				if b, err := base64.StdEncoding.DecodeString(e.Auth); err == nil {
					if u, p, ok := strings.Cut(string(b), ":"); ok {
						a.Username, a.Password = u, p
					}
				}
			}
			matches = append(matches, match{len(key), a})
		}
	}
	out := make([]*runtimeapi.AuthConfig, 0, len(matches))
	for len(matches) > 0 {
		best := 0
		for i := range matches {
			if matches[i].n > matches[best].n {
				best = i
			}
		}
		out = append(out, matches[best].a)
		matches = append(matches[:best], matches[best+1:]...)
	}
	return out
}

// imageRepository is image's registry host and path without tag or digest,
// with Docker Hub's implicit host made explicit.
func imageRepository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	first, _, found := strings.Cut(image, "/")
	if !found || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		image = "docker.io/" + image
	}
	return image
}

func normalizeRegistry(r string) string {
	r = strings.TrimPrefix(strings.TrimPrefix(r, "https://"), "http://")
	r = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(r, "/"), "/v1"), "/v2")
	r = strings.TrimSuffix(r, "/")
	if r == "index.docker.io" || r == "registry-1.docker.io" {
		r = "docker.io"
	}
	return r
}
