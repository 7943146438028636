package alertmanager_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocumentedAlertmanagerConfig: the alertmanager.yml of
// docs/operations.md is valid for a real Alertmanager (amtool
// check-config), and routes each set of labels its table lists to the
// receivers the table says (amtool config routes test).
func TestDocumentedAlertmanagerConfig(t *testing.T) {
	amtool := need(t, "amtool")
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	after := func(marker string) string {
		_, rest, ok := strings.Cut(string(doc), marker)
		if !ok {
			t.Fatalf("docs/operations.md: no %q", marker)
		}
		return rest
	}
	block, _, ok := strings.Cut(strings.TrimPrefix(after("<!-- alertmanager.yml: TestDocumentedAlertmanagerConfig -->\n"), "```yaml\n"), "\n```")
	if !ok {
		t.Fatal("docs/operations.md: no alertmanager.yml block after its marker")
	}
	cfg := filepath.Join(t.TempDir(), "alertmanager.yml")
	if err := os.WriteFile(cfg, []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(amtool, "check-config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}

	table, _, _ := strings.Cut(after("<!-- routes: TestDocumentedAlertmanagerConfig -->\n"), "\n\n")
	rows := 0
	for _, line := range strings.Split(table, "\n")[2:] {
		cells := strings.Split(strings.Trim(line, "| "), "|")
		if len(cells) != 2 {
			t.Fatalf("routes table: row %q", line)
		}
		labels := strings.Fields(strings.Trim(strings.TrimSpace(cells[0]), "`"))
		want := strings.ReplaceAll(strings.TrimSpace(cells[1]), ", ", ",")
		out, err := exec.Command(amtool, append([]string{"config", "routes", "test", "--config.file=" + cfg}, labels...)...).Output()
		if err != nil {
			t.Fatalf("amtool config routes test %v: %v", labels, err)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("%v goes to %s; the docs say %s", labels, got, want)
		}
		rows++
	}
	if rows < 4 {
		t.Fatalf("routes table: %d rows", rows)
	}
}
