package validation

import (
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "skiff.dev/proto/api/core/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
)

// Upstream's limits (pkg/apis/storage/validation).
const (
	provisionerMaxLength       = 63
	maxProvisionerParameterLen = 512
	maxProvisionerParameterSz  = 256 * 1024
)

// storageKind validates the storage kinds the kinds switch does not name:
// StorageClass (create, and update against old).
func storageKind(obj, old proto.Message) field.ErrorList {
	switch o := obj.(type) {
	case *storagev1.StorageClass:
		oldSC, _ := old.(*storagev1.StorageClass)
		return storageClass(o, oldSC)
	}
	return nil
}

// storageClass is upstream's ValidateStorageClass and, with old,
// ValidateStorageClassUpdate.
func storageClass(sc, old *storagev1.StorageClass) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, provisioner(sc.GetProvisioner(), field.NewPath("provisioner"))...)
	errs = append(errs, provisionerParameters(sc.GetParameters(), field.NewPath("parameters"))...)
	if p := sc.ReclaimPolicy; p != nil {
		errs = append(errs, oneOf(*p, field.NewPath("reclaimPolicy"), "Delete", "Retain")...)
	}
	if m := sc.VolumeBindingMode; m != nil {
		errs = append(errs, oneOf(*m, field.NewPath("volumeBindingMode"), "Immediate", "WaitForFirstConsumer")...)
	}
	errs = append(errs, allowedTopologies(sc.GetAllowedTopologies(), field.NewPath("allowedTopologies"))...)
	if old == nil {
		return errs
	}
	if !equalStringMaps(sc.GetParameters(), old.GetParameters()) {
		errs = append(errs, field.Forbidden(field.NewPath("parameters"), "updates to parameters are forbidden."))
	}
	if sc.GetProvisioner() != old.GetProvisioner() {
		errs = append(errs, field.Forbidden(field.NewPath("provisioner"), "updates to provisioner are forbidden."))
	}
	if sc.GetReclaimPolicy() != old.GetReclaimPolicy() {
		errs = append(errs, field.Forbidden(field.NewPath("reclaimPolicy"), "updates to reclaimPolicy are forbidden."))
	}
	errs = append(errs, immutable(sc.GetVolumeBindingMode() != old.GetVolumeBindingMode(), field.NewPath("volumeBindingMode"), sc.GetVolumeBindingMode())...)
	return errs
}

func equalStringMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func provisioner(p string, path *field.Path) field.ErrorList {
	if p == "" {
		return field.ErrorList{field.Required(path, p)}
	}
	var errs field.ErrorList
	if len(p) > provisionerMaxLength {
		errs = append(errs, field.TooLong(path, p, provisionerMaxLength))
	}
	for _, msg := range validation.IsQualifiedName(strings.ToLower(p)) {
		errs = append(errs, field.Invalid(path, p, msg))
	}
	return errs
}

func provisionerParameters(params map[string]string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(params) > maxProvisionerParameterLen {
		errs = append(errs, field.TooLong(path, "", maxProvisionerParameterLen))
		return errs
	}
	size := 0
	for k, v := range params {
		if k == "" {
			errs = append(errs, field.Invalid(path, k, "field can not be empty."))
		}
		size += len(k) + len(v)
	}
	if size > maxProvisionerParameterSz {
		errs = append(errs, field.TooLong(path, "", maxProvisionerParameterSz))
	}
	return errs
}

// allowedTopologies is upstream's ValidateTopologySelectorTerm for each
// term: at least one requirement, qualified keys, unique non-empty values.
func allowedTopologies(terms []*corev1.TopologySelectorTerm, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, t := range terms {
		p := path.Index(i)
		if len(t.GetMatchLabelExpressions()) == 0 {
			errs = append(errs, field.Required(p.Child("matchLabelExpressions"), "must contain at least one key-value pair"))
			continue
		}
		keys := map[string]bool{}
		for j, r := range t.GetMatchLabelExpressions() {
			rp := p.Child("matchLabelExpressions").Index(j)
			for _, msg := range validation.IsQualifiedName(r.Key) {
				errs = append(errs, field.Invalid(rp.Child("key"), r.Key, msg))
			}
			if keys[r.Key] {
				errs = append(errs, field.Duplicate(rp.Child("key"), r.Key))
			}
			keys[r.Key] = true
			if len(r.Values) == 0 {
				errs = append(errs, field.Required(rp.Child("values"), "must specify as least one value"))
			}
			seen := map[string]bool{}
			for k, v := range r.Values {
				if seen[v] {
					errs = append(errs, field.Duplicate(rp.Child("values").Index(k), v))
				}
				seen[v] = true
			}
		}
	}
	return errs
}

var accessModesSupported = []string{"ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"}

func accessModes(modes []string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, m := range modes {
		errs = append(errs, oneOf(m, path.Index(i), accessModesSupported...)...)
		if m == "ReadWriteOncePod" && len(modes) > 1 {
			errs = append(errs, field.Forbidden(path, "may not use ReadWriteOncePod with other access modes"))
		}
	}
	return errs
}

func storageClassName(n string, path *field.Path) field.ErrorList {
	if n == "" {
		return nil
	}
	var errs field.ErrorList
	for _, msg := range dnsSubdomain(n, false) {
		errs = append(errs, field.Invalid(path, n, msg))
	}
	return errs
}

func volumeModeField(m *string, path *field.Path) field.ErrorList {
	if m == nil {
		return nil
	}
	return oneOf(*m, path, "Block", "Filesystem")
}

// persistentVolumeStorage is what upstream's ValidatePersistentVolume
// checks beyond the access modes and capacity the kinds switch checks:
// the modes' values, one volume source, the reclaim policy, the class name,
// the volume mode, node affinity, the CSI source, and on update the
// immutable source, volume mode and node affinity.
func persistentVolumeStorage(pv, old *corev1.PersistentVolume) field.ErrorList {
	s := nonNil(pv.GetSpec())
	errs := accessModes(s.GetAccessModes(), specPath.Child("accessModes"))
	for k, q := range s.GetCapacity() {
		p := specPath.Child("capacity").Key(k)
		if k != "storage" {
			errs = append(errs, field.NotSupported(specPath.Child("capacity"), k, []string{"storage"}))
			continue
		}
		errs = append(errs, quantity(q, p)...)
		if v, err := resource.ParseQuantity(q.GetString_()); err == nil && v.Sign() <= 0 {
			errs = append(errs, field.Invalid(p, q.GetString_(), "must be greater than zero"))
		}
	}
	errs = append(errs, volumeSources(s.GetPersistentVolumeSource(), specPath)...)
	if p := s.GetPersistentVolumeReclaimPolicy(); p != "" {
		errs = append(errs, oneOf(p, specPath.Child("persistentVolumeReclaimPolicy"), "Delete", "Recycle", "Retain")...)
	}
	errs = append(errs, storageClassName(s.GetStorageClassName(), specPath.Child("storageClassName"))...)
	errs = append(errs, volumeModeField(s.VolumeMode, specPath.Child("volumeMode"))...)
	if na := s.GetNodeAffinity(); na != nil {
		p := specPath.Child("nodeAffinity", "required")
		req := na.GetRequired()
		if req == nil || len(req.GetNodeSelectorTerms()) == 0 {
			errs = append(errs, field.Required(p.Child("nodeSelectorTerms"), "must have at least one node selector term"))
		}
		for i, t := range req.GetNodeSelectorTerms() {
			errs = append(errs, nodeSelectorTerm(t, p.Child("nodeSelectorTerms").Index(i))...)
		}
	}
	if src := s.GetPersistentVolumeSource(); src.GetLocal() != nil && s.GetNodeAffinity() == nil {
		errs = append(errs, field.Required(specPath.Child("nodeAffinity"), "Local volumes require node affinity"))
	}
	if ref := s.GetClaimRef(); ref != nil {
		if ref.GetName() == "" {
			errs = append(errs, field.Required(specPath.Child("claimRef", "name"), ""))
		}
		if ref.GetNamespace() == "" {
			errs = append(errs, field.Required(specPath.Child("claimRef", "namespace"), ""))
		}
	}
	if old == nil {
		return errs
	}
	o := nonNil(old.GetSpec())
	if !equal(s.GetPersistentVolumeSource(), o.GetPersistentVolumeSource()) {
		errs = append(errs, field.Forbidden(specPath.Child("persistentvolumesource"), "spec.persistentvolumesource is immutable after creation"))
	}
	errs = append(errs, immutable(volumeModeOrDefault(s.VolumeMode) != volumeModeOrDefault(o.VolumeMode), specPath.Child("volumeMode"), s.GetVolumeMode())...)
	if o.GetNodeAffinity() != nil {
		errs = append(errs, immutable(!equal(s.GetNodeAffinity(), o.GetNodeAffinity()), specPath.Child("nodeAffinity"), "")...)
	}
	return errs
}

func volumeModeOrDefault(m *string) string {
	if m == nil || *m == "" {
		return "Filesystem"
	}
	return *m
}

// volumeSources: exactly one source, and the CSI, hostPath and local ones
// complete.
func volumeSources(src *corev1.PersistentVolumeSource, path *field.Path) field.ErrorList {
	n := 0
	if src != nil {
		src.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
	}
	switch {
	case n == 0:
		return field.ErrorList{field.Required(path, "must specify a volume type")}
	case n > 1:
		return field.ErrorList{field.Forbidden(path, "may not specify more than 1 volume type")}
	}
	var errs field.ErrorList
	if c := src.GetCsi(); c != nil {
		p := path.Child("csi")
		if c.GetDriver() == "" {
			errs = append(errs, field.Required(p.Child("driver"), ""))
		} else {
			if len(c.GetDriver()) > provisionerMaxLength {
				errs = append(errs, field.TooLong(p.Child("driver"), c.GetDriver(), provisionerMaxLength))
			}
			for _, msg := range validation.IsDNS1123Subdomain(strings.ToLower(c.GetDriver())) {
				errs = append(errs, field.Invalid(p.Child("driver"), c.GetDriver(), msg))
			}
		}
		if c.GetVolumeHandle() == "" {
			errs = append(errs, field.Required(p.Child("volumeHandle"), ""))
		}
	}
	if h := src.GetHostPath(); h != nil && h.GetPath() == "" {
		errs = append(errs, field.Required(path.Child("hostPath", "path"), ""))
	}
	if l := src.GetLocal(); l != nil && l.GetPath() == "" {
		errs = append(errs, field.Required(path.Child("local", "path"), ""))
	}
	return errs
}

// persistentVolumeClaimStorage is what upstream's
// ValidatePersistentVolumeClaim checks beyond the kinds switch: the
// selector, a positive request, the class name, the volume mode, the data
// source, the access modes' exclusivity; and on update, upstream's rule
// that the spec is immutable but for the requests, a volumeName set once,
// and a class assigned to a claim that had none (the retroactive default).
func persistentVolumeClaimStorage(pvc, old *corev1.PersistentVolumeClaim) field.ErrorList {
	s := nonNil(pvc.GetSpec())
	var errs field.ErrorList
	for i, m := range s.GetAccessModes() {
		if m == "ReadWriteOncePod" && len(s.GetAccessModes()) > 1 {
			errs = append(errs, field.Forbidden(specPath.Child("accessModes").Index(i), "may not use ReadWriteOncePod with other access modes"))
		}
	}
	if sel := s.GetSelector(); sel != nil {
		errs = append(errs, labelSelector(sel, specPath.Child("selector"))...)
	}
	if q, ok := s.GetResources().GetRequests()["storage"]; ok {
		if v, err := resource.ParseQuantity(q.GetString_()); err == nil && v.Sign() <= 0 {
			errs = append(errs, field.Invalid(specPath.Child("resources", "requests").Key("storage"), q.GetString_(), "must be greater than zero"))
		}
	}
	if n := s.StorageClassName; n != nil {
		errs = append(errs, storageClassName(*n, specPath.Child("storageClassName"))...)
	}
	errs = append(errs, volumeModeField(s.VolumeMode, specPath.Child("volumeMode"))...)
	if ds := s.GetDataSource(); ds != nil {
		if ds.GetKind() == "" {
			errs = append(errs, field.Required(specPath.Child("dataSource", "kind"), ""))
		}
		if ds.GetName() == "" {
			errs = append(errs, field.Required(specPath.Child("dataSource", "name"), ""))
		}
	}
	if old == nil {
		return errs
	}
	o := nonNil(old.GetSpec())
	a, b := proto.Clone(s).(*corev1.PersistentVolumeClaimSpec), proto.Clone(o).(*corev1.PersistentVolumeClaimSpec)
	a.Resources, b.Resources = nil, nil
	if b.VolumeName == "" {
		b.VolumeName = a.VolumeName
	}
	if b.StorageClassName == nil && old.GetMetadata().GetAnnotations()["volume.beta.kubernetes.io/storage-class"] == "" {
		b.StorageClassName = a.StorageClassName
	}
	if !equal(a, b) {
		errs = append(errs, field.Forbidden(specPath, "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"))
	}
	return errs
}
