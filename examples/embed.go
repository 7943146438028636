// Package examples holds the example rule sets and the demo configuration,
// embedded so that `sluice demo` runs from the binary alone.
package examples

import "embed"

// Files holds demo/ (the demo's sluice.yaml) and rules/ (example rules).
//
//go:embed demo rules
var Files embed.FS
