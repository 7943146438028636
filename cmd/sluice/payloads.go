package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/rules"
)

// readPayloads reads the messages of a file of payloads, for rules try and
// rules lint --sample. A .yaml or .yml file is a list of messages as rule
// tests publish them ({topic, payload, content_type, properties, ...}; see
// docs/rules.md); any other file has one message a line: TOPIC PAYLOAD, as
// `mosquitto_sub -v` prints them, or the PAYLOAD alone when topic is given.
// Empty lines and lines starting with # are skipped. topic is also the
// topic of a YAML message without one. "-" is stdin.
func readPayloads(path, topic string, stdin io.Reader) ([]rules.TestMessage, error) {
	if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
		var msgs []rules.TestMessage
		if _, err := conf.DecodeFile(path, &msgs); err != nil {
			return nil, err
		}
		for i := range msgs {
			if msgs[i].Topic == "" {
				if topic == "" {
					return nil, fmt.Errorf("%s: message %d has no topic (give one, or -topic)", path, i+1)
				}
				msgs[i].Topic = topic
			}
		}
		return msgs, nil
	}
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var msgs []rules.TestMessage
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		m := rules.TestMessage{Topic: topic, Payload: string(line)}
		if topic == "" {
			t, payload, ok := strings.Cut(string(line), " ")
			if !ok {
				return nil, fmt.Errorf("%s:%d: want TOPIC PAYLOAD (as mosquitto_sub -v prints them), or give -topic", path, n)
			}
			m.Topic, m.Payload = t, strings.TrimSpace(payload)
		}
		msgs = append(msgs, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(msgs) == 0 {
		return nil, errors.New(path + ": no payloads")
	}
	return msgs, nil
}
