package codec

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Document is one object of a manifest, with where it came from for messages.
type Document struct {
	// Index is the object's position in the stream, from 0.
	Index int
	// JSON is the object's upstream JSON, as read (after YAML conversion).
	JSON []byte
	// Object is the decoded object.
	Object proto.Message
}

// maxDocument bounds one YAML document; the apiserver refuses objects above
// 1.5 MiB anyway, and an unbounded line would let a reader take any memory.
const maxDocument = 16 << 20

// ReadManifests reads a stream of YAML documents separated by "---" lines, or
// one JSON value, as kubectl's -f does. Lists (kind: List, or any kind ending
// in List with items) are opened into their items. Empty documents are skipped.
func ReadManifests(r io.Reader, opts Options) ([]Document, error) {
	docs, err := splitYAML(r)
	if err != nil {
		return nil, err
	}
	var out []Document
	for _, doc := range docs {
		jsonDoc, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(out), err)
		}
		jsonDoc = bytes.TrimSpace(jsonDoc)
		if len(jsonDoc) == 0 || bytes.Equal(jsonDoc, []byte("null")) {
			continue
		}
		items, err := openLists(jsonDoc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(out), err)
		}
		for _, item := range items {
			obj, err := Decode(item, opts)
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", len(out), err)
			}
			out = append(out, Document{Index: len(out), JSON: item, Object: obj})
		}
	}
	return out, nil
}

// openLists returns the items of a List, recursively, or the document itself.
func openLists(doc []byte) ([][]byte, error) {
	var head struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(doc, &head); err != nil {
		return nil, fmt.Errorf("invalid object: %w", err)
	}
	if !strings.HasSuffix(head.Kind, "List") {
		return [][]byte{doc}, nil
	}
	var out [][]byte
	for _, it := range head.Items {
		sub, err := openLists(it)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

// splitYAML cuts a stream at lines that are exactly "---" (optionally followed
// by a comment or spaces). A JSON stream is one document: YAML is a superset.
func splitYAML(r io.Reader) ([][]byte, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxDocument)
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(cur.Bytes())) > 0 {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for sc.Scan() {
		line := sc.Bytes()
		if isSeparator(line) {
			flush()
			continue
		}
		if cur.Len()+len(line) > maxDocument {
			return nil, errors.New("a document is larger than 16 MiB")
		}
		cur.Write(line)
		cur.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	flush()
	return docs, nil
}

func isSeparator(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("---")) {
		return false
	}
	rest := bytes.TrimSpace(line[3:])
	return len(rest) == 0 || rest[0] == '#'
}
