package webhook

import (
	"encoding/json"
	"fmt"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/tmpl"
)

// Body is the shape of a request body, written in the config as the YAML
// of the JSON to send: mappings become objects (keys in the order
// written), sequences arrays, numbers, booleans and null themselves, and
// every string is a template ({name} placeholders, see internal/tmpl),
// rendered per event and sent as a JSON string. So
//
//	body:
//	  text: "[{severity}] {rule} on {device}: {message}"
//	  channel: "#plant-alerts"
//
// sends {"text":"[critical] boiler on boiler-7: ...","channel":"#plant-alerts"},
// with whatever the alert's message holds escaped as JSON needs.
type Body struct {
	root *node
	// problems are the templates that did not parse, reported by Validate
	// at their keys.
	problems conf.Problems
}

type nodeKind uint8

const (
	kindLiteral nodeKind = iota // JSON text, as is: a number, true, false, null
	kindTemplate
	kindObject
	kindArray
)

type node struct {
	kind     nodeKind
	literal  []byte
	template *tmpl.Template
	keys     []string // of an object, in order
	children []*node  // an object's values (by keys), or an array's items
}

// UnmarshalYAML builds the body from its YAML. It takes the node, not an
// unmarshal function, to keep the keys in their order.
func (b *Body) UnmarshalYAML(n ast.Node) error {
	root, err := b.build(n, "")
	if err != nil {
		return err
	}
	b.root = root
	return nil
}

func (b *Body) build(n ast.Node, path string) (*node, error) {
	switch x := n.(type) {
	case *ast.AnchorNode:
		return b.build(x.Value, path)
	case *ast.TagNode:
		return b.build(x.Value, path)
	case *ast.MappingNode:
		out := &node{kind: kindObject}
		for _, mv := range x.Values {
			if err := b.addPair(out, mv, path); err != nil {
				return nil, err
			}
		}
		return out, nil
	case *ast.MappingValueNode:
		out := &node{kind: kindObject}
		if err := b.addPair(out, x, path); err != nil {
			return nil, err
		}
		return out, nil
	case *ast.SequenceNode:
		out := &node{kind: kindArray}
		for i, item := range x.Values {
			c, err := b.build(item, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out.children = append(out.children, c)
		}
		return out, nil
	case *ast.StringNode, *ast.LiteralNode:
		var s string
		if err := yaml.NodeToValue(n, &s); err != nil {
			return nil, err
		}
		t, err := tmpl.Parse(s)
		if err != nil {
			b.problems.Addf(path, "%v", err)
			return &node{kind: kindLiteral, literal: []byte("null")}, nil
		}
		if t.Static() {
			lit, _ := json.Marshal(s)
			return &node{kind: kindLiteral, literal: lit}, nil
		}
		return &node{kind: kindTemplate, template: t}, nil
	case *ast.AliasNode, *ast.MergeKeyNode:
		return nil, fmt.Errorf("[%d:%d] body: aliases (*name, <<) are not supported here; write the value out", n.GetToken().Position.Line, n.GetToken().Position.Column)
	}
	var v any
	if err := yaml.NodeToValue(n, &v); err != nil {
		return nil, err
	}
	lit, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("[%d:%d] body: %v", n.GetToken().Position.Line, n.GetToken().Position.Column, err)
	}
	return &node{kind: kindLiteral, literal: lit}, nil
}

func (b *Body) addPair(out *node, mv *ast.MappingValueNode, path string) error {
	key := mv.Key.GetToken().Value
	at := key
	if path != "" {
		at = path + "." + key
	}
	c, err := b.build(mv.Value, at)
	if err != nil {
		return err
	}
	out.keys = append(out.keys, key)
	out.children = append(out.children, c)
	return nil
}

// Validate reports the templates that do not parse.
func (b *Body) Validate() error { return b.problems.Err() }

// appendJSON appends the body rendered for e to dst.
func (b *Body) appendJSON(dst []byte, e *sluice.Event) ([]byte, error) {
	return b.root.appendJSON(dst, e)
}

func (n *node) appendJSON(dst []byte, e *sluice.Event) ([]byte, error) {
	var err error
	switch n.kind {
	case kindLiteral:
		return append(dst, n.literal...), nil
	case kindTemplate:
		s, err := n.template.Render(e)
		if err != nil {
			return dst, fmt.Errorf("body: %w", err)
		}
		return sluice.AppendJSONString(dst, s), nil
	case kindObject:
		dst = append(dst, '{')
		for i, k := range n.keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(sluice.AppendJSONString(dst, k), ':')
			if dst, err = n.children[i].appendJSON(dst, e); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	case kindArray:
		dst = append(dst, '[')
		for i, c := range n.children {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = c.appendJSON(dst, e); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	}
	return dst, fmt.Errorf("body: node of unknown kind %d", n.kind)
}
