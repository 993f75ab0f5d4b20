package api

import (
	"bufio"
	"embed"
	"io/fs"
	"regexp"
	"strings"
	"sync"
)

// The generated .proto sources carry upstream's field documentation; they
// are embedded so `skiffctl explain` can show it without a server round trip.
//
//go:embed */*/generated.proto
var protoSources embed.FS

// FieldDoc is one field of a message as its .proto source declares it.
type FieldDoc struct {
	Name     string // upstream's JSON name
	Type     string // proto type: "int32", "skiff.api.core.v1.PodSpec", "map<string, string>"
	Repeated bool
	Doc      string
}

// MessageDoc is a message's documentation and fields, in declaration order.
type MessageDoc struct {
	Name   string // full name, "skiff.api.apps.v1.Deployment"
	Doc    string
	Fields []FieldDoc
}

var (
	docsOnce sync.Once
	docs     map[string]*MessageDoc
	fieldRe  = regexp.MustCompile(`^(repeated |optional )?(map<[^>]+>|[\w.]+) (\w+) = \d+`)
)

// Docs returns the documentation of a message by full name.
func Docs(fullName string) (*MessageDoc, bool) {
	docsOnce.Do(loadDocs)
	d, ok := docs[fullName]
	return d, ok
}

func loadDocs() {
	docs = map[string]*MessageDoc{}
	fs.WalkDir(protoSources, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := protoSources.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		parse(bufio.NewScanner(f))
		return nil
	})
}

func parse(sc *bufio.Scanner) {
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	pkg := ""
	var comment []string
	var cur *MessageDoc
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "package "):
			pkg = strings.TrimSuffix(strings.TrimPrefix(line, "package "), ";")
		case strings.HasPrefix(line, "//"):
			comment = append(comment, strings.TrimSpace(strings.TrimPrefix(line, "//")))
			continue
		case strings.HasPrefix(line, "message ") && strings.HasSuffix(line, "{"):
			name := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "message "), "{"))
			cur = &MessageDoc{Name: pkg + "." + name, Doc: strings.Join(comment, "\n")}
			docs[cur.Name] = cur
		case line == "}":
			cur = nil
		case cur != nil:
			if m := fieldRe.FindStringSubmatch(line); m != nil {
				typ := m[2]
				if !strings.Contains(typ, ".") && !strings.HasPrefix(typ, "map<") && !isScalar(typ) {
					typ = pkg + "." + typ
				}
				cur.Fields = append(cur.Fields, FieldDoc{Name: m[3], Type: typ, Repeated: m[1] == "repeated ", Doc: strings.Join(comment, "\n")})
			}
		}
		comment = nil
	}
}

func isScalar(t string) bool {
	switch t {
	case "string", "bool", "bytes", "int32", "int64", "uint32", "uint64", "double", "float", "sint32", "sint64", "fixed32", "fixed64":
		return true
	}
	return false
}
