package coap

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// errNotUnderPrefix is a request for a path outside the prefix: 4.04.
var errNotUnderPrefix = errors.New("the path is not under the publish prefix")

// maxTopicLen is the longest MQTT topic name (a 16-bit length).
const maxTopicLen = 65535

// topicFromPath maps a request's Uri-Path segments to a topic: the segments
// after the prefix, joined by "/", so coap://host/ps/plant/north/l1/d1/telemetry
// publishes to plant/north/l1/d1/telemetry. Each segment is one topic level,
// as sent (CoAP carries segments already percent-decoded). Refused, with the
// reason as the 4.00 diagnostic:
//   - no segment after the prefix;
//   - an empty level (a double or trailing slash in the URI);
//   - a level holding "+" or "#" (wildcards have no place in a topic one
//     publishes to), or "/" (a %2F in the URI would add a level the path
//     does not show), or U+0000, or text that is not UTF-8;
//   - a first level starting with "$" (reserved for the broker, as $SYS);
//   - a topic longer than 65535 bytes.
func topicFromPath(prefix, path []string) (string, error) {
	if len(path) < len(prefix) {
		return "", errNotUnderPrefix
	}
	for i, p := range prefix {
		if path[i] != p {
			return "", errNotUnderPrefix
		}
	}
	levels := path[len(prefix):]
	if len(levels) == 0 {
		return "", errors.New("no topic after the prefix")
	}
	n := len(levels) - 1
	for i, l := range levels {
		n += len(l)
		switch {
		case l == "":
			return "", fmt.Errorf("topic level %d is empty (a double or trailing slash)", i+1)
		case !utf8.ValidString(l):
			return "", fmt.Errorf("topic level %d is not UTF-8", i+1)
		case strings.ContainsAny(l, "+#"):
			return "", fmt.Errorf("topic level %q holds a wildcard (+ or #); a topic to publish to has none", l)
		case strings.Contains(l, "/"):
			return "", fmt.Errorf("topic level %q holds a slash (%%2F in the URI); each path segment is one topic level", l)
		case strings.ContainsRune(l, 0):
			return "", fmt.Errorf("topic level %d holds U+0000", i+1)
		}
	}
	if strings.HasPrefix(levels[0], "$") {
		return "", fmt.Errorf("topics starting with $ (%q) are reserved for the broker", levels[0])
	}
	if n > maxTopicLen {
		return "", fmt.Errorf("the topic is %d bytes, longer than %d", n, maxTopicLen)
	}
	return strings.Join(levels, "/"), nil
}
