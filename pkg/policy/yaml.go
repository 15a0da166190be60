package policy

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// MaxDocumentSize caps the YAML that Parse reads, in bytes.
const MaxDocumentSize = 1 << 20

// Parse reads a YAML (or JSON) document and validates it. Unknown keys are
// refused with their path, so a misspelt limit never passes silently as
// "unlimited". Every error wraps ErrInvalid; a document that parses but
// breaks a rule returns a *ValidationError.
func Parse(data []byte) (*Document, error) {
	if len(data) > MaxDocumentSize {
		return nil, fmt.Errorf("%w: %d bytes exceed the %d-byte maximum", ErrInvalid, len(data), MaxDocumentSize)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(root.Content) == 0 {
		return &Document{}, nil // an empty document limits nothing
	}
	return parseNode(root.Content[0], "")
}

// ParseNode decodes and validates the document at n, a YAML mapping such
// as a section of a larger file (the node's policy section). Errors are as
// Parse's, with paths relative to n.
func ParseNode(n *yaml.Node) (*Document, error) { return parseNode(n, "") }

// parseNode decodes and validates the document at n, whose keys are
// reported under path.
func parseNode(n *yaml.Node, path string) (*Document, error) {
	var probs []*limiter.FieldError
	checkKeys(n, reflect.TypeFor[Document](), path, &probs)
	if len(probs) > 0 {
		return nil, &ValidationError{Problems: probs}
	}
	doc := &Document{}
	if err := n.Decode(doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := doc.Validate(); err != nil {
		return nil, err
	}
	return doc, nil
}

// Marshal returns the document in YAML, with map keys sorted.
func Marshal(doc *Document) ([]byte, error) {
	var b bytes.Buffer
	e := yaml.NewEncoder(&b)
	e.SetIndent(2)
	if err := e.Encode(doc); err != nil {
		return nil, err
	}
	if err := e.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// checkKeys walks a YAML node against the Go type it decodes into and
// reports every mapping key the type does not have, with its path.
func checkKeys(n *yaml.Node, t reflect.Type, path string, probs *[]*limiter.FieldError) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind != yaml.MappingNode {
		return // a type mismatch is Decode's to report
	}
	switch t.Kind() {
	case reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), probs)
		}
	case reflect.Struct:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			ft, ok := fields[k]
			if !ok {
				*probs = append(*probs, problem(join(path, k), nil,
					fmt.Sprintf("unknown key (line %d); known keys: %s", n.Content[i].Line, known(fields))))
				continue
			}
			checkKeys(n.Content[i+1], ft, join(path, k), probs)
		}
	}
}

// yamlFields maps the YAML keys of struct t, inline fields included, to
// their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func known(fields map[string]reflect.Type) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// ParseFile reads and parses the document in the file at path, for a
// node's configuration and its --check-config. Errors name the file and
// still wrap ErrInvalid for an invalid document.
func ParseFile(path string) (*Document, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("policy: %s: %w", path, err)
	}
	doc, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc, nil
}
