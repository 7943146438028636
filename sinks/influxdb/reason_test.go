package influxdb_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/sinks/influxdb"
)

// A point InfluxDB refuses comes back as a dead letter's reason: it must
// keep InfluxDB's cause, however long the line protocol it echoes. influxd
// 1.x cuts its X-Influxdb-Error header at 1,024 bytes, which is all the
// client read of a 1.x error: a 64 KB field name kept the start of the line
// and lost "max key length exceeded".
func TestRefusedPointKeepsTheCause(t *testing.T) {
	s := testsvc.Influxd(t)
	if err := s.CreateDatabase("db"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sink := influxdb.New(influxdb.Config{URL: s.URL, Bucket: "db/autogen"}, sluice.StreamRecords)
	if err := sink.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("f", 64<<10)
	err := sink.Write(ctx, []sluice.Event{record("b1", []sluice.Field{{Name: name, Value: 1.0}}, time.Now())})
	if err == nil || !sluice.IsPermanent(err) {
		t.Fatalf("got %v, want a permanent error", err)
	}
	reason := err.Error()
	if !strings.Contains(reason, "max key length exceeded: 65") || len(reason) > 1000 {
		t.Fatalf("the reason (%d bytes) should keep InfluxDB's cause and shorten the echoed line: %.300q ... %.300q",
			len(reason), reason, reason[max(0, len(reason)-300):])
	}
	if !strings.Contains(reason, "unable to parse 'boiler,device=b1,site=north ffff") || !strings.Contains(reason, "bytes)") {
		t.Errorf("the reason should start the echo and say how long it was: %q", reason)
	}
	t.Logf("reason: %s", reason)
}
