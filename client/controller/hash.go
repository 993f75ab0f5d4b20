package controller

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/rand"

	corev1 "skiff.dev/proto/api/core/v1"
)

// ComputeHash names a pod template for the Deployment's pod-template-hash
// and the DaemonSet's revisions: upstream's controller.ComputeHash (fnv32a,
// the collision count appended as 8 little endian bytes,
// rand.SafeEncodeString of the decimal sum) over the template's
// deterministic protobuf encoding instead of a deep-hash print of Go
// structs, which protobuf messages do not have in a stable form.
func ComputeHash(template *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(template)
	if err != nil {
		// A message that cannot be encoded cannot be stored either; hash
		// its text so the name is still a function of the template.
		b = []byte(fmt.Sprint(template))
	}
	h.Write(b)
	if collisionCount != nil {
		buf := make([]byte, 8)
		binary.LittleEndian.PutUint32(buf, uint32(*collisionCount))
		h.Write(buf)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}
