// Package tmpl renders the small templates sinks are configured with: a
// Kafka key, an MQTT topic, an InfluxDB tag value. A template is text with
// {name} placeholders:
//
//	{device}   a record tag or field, or an alert attribute (rule, severity,
//	           status, series, device), or topic / client_id
//	{3}        the topic's 4th level (levels count from 0)
//
// Example: "alerts/{site}/{device}/{rule}" or "{1}/{3}".
package tmpl

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice"
)

// Template is a parsed template.
type Template struct {
	src   string
	parts []part
}

type part struct {
	text    string
	name    string
	segment int // >= 0 for {N}
}

// Parse parses a template.
func Parse(src string) (*Template, error) {
	t := &Template{src: src}
	rest := src
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			t.parts = append(t.parts, part{text: rest, segment: -1})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, part{text: rest[:open], segment: -1})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("template %q: unclosed {", src)
		}
		name := strings.TrimSpace(rest[open+1 : open+end])
		if name == "" {
			return nil, fmt.Errorf("template %q: empty {}", src)
		}
		p := part{name: name, segment: -1}
		if n, err := strconv.Atoi(name); err == nil {
			if n < 0 {
				return nil, fmt.Errorf("template %q: segment {%d} must be 0 or more", src, n)
			}
			p.segment = n
		}
		t.parts = append(t.parts, p)
		rest = rest[open+end+1:]
	}
	return t, nil
}

// MustParse is Parse for templates known to be valid.
func MustParse(src string) *Template {
	t, err := Parse(src)
	if err != nil {
		panic(err)
	}
	return t
}

func (t *Template) String() string { return t.src }

// Names returns the names the template looks up ({device}; not the
// topic levels, {3}), in order.
func (t *Template) Names() []string {
	var names []string
	for _, p := range t.parts {
		if p.name != "" && p.segment < 0 {
			names = append(names, p.name)
		}
	}
	return names
}

// Static reports whether the template has no placeholders.
func (t *Template) Static() bool {
	for _, p := range t.parts {
		if p.name != "" {
			return false
		}
	}
	return true
}

// Render renders the template for an event. A name the event does not have
// is an error: the event cannot be written where the template points.
func (t *Template) Render(e *sluice.Event) (string, error) {
	if len(t.parts) == 1 && t.parts[0].name == "" {
		return t.parts[0].text, nil
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch {
		case p.name == "":
			b.WriteString(p.text)
		case p.segment >= 0:
			seg, ok := segment(e.Message.Topic, p.segment)
			if !ok {
				return "", fmt.Errorf("template %q: topic %q has no level {%d}", t.src, e.Message.Topic, p.segment)
			}
			b.WriteString(seg)
		default:
			v, ok := e.Lookup(p.name)
			if !ok {
				return "", fmt.Errorf("template %q: no %q in this %s event", t.src, p.name, e.Stream)
			}
			b.WriteString(v)
		}
	}
	return b.String(), nil
}

func segment(topic string, n int) (string, bool) {
	for i := 0; ; i++ {
		cut := strings.IndexByte(topic, '/')
		if i == n {
			if cut < 0 {
				return topic, true
			}
			return topic[:cut], true
		}
		if cut < 0 {
			return "", false
		}
		topic = topic[cut+1:]
	}
}
