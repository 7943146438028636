package influxdb_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/sinks/influxdb"
)

// TestMissingDatabaseIsSaidWithTheFix checks a database that does not
// exist is said once, at connect, with what to do, instead of a write
// retried for ever as "404 database not found"; that writes stay retryable
// meanwhile (nothing is dropped); and that create: true makes it, at
// connect and when a write finds it gone.
func TestMissingDatabaseIsSaidWithTheFix(t *testing.T) {
	s := testsvc.Influxd(t)
	ctx := context.Background()
	at := time.Now()
	point := []sluice.Event{record("b1", []sluice.Field{{Name: "temperature", Value: 90.0}}, at)}

	t.Run("said, with the fix", func(t *testing.T) {
		sink := influxdb.New(influxdb.Config{URL: s.URL, Bucket: "plant/autogen"}, sluice.StreamRecords)
		defer sink.Close(ctx)
		err := sink.Connect(ctx)
		for _, want := range []string{`InfluxDB has no database "plant" (bucket "plant/autogen")`, `CREATE DATABASE "plant"`, "create: true", "wait in the journal"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("connect: %v\nwant %q", err, want)
			}
		}
		err = sink.Write(ctx, point)
		var r *sluice.RetryableError
		if !errors.As(err, &r) || !strings.Contains(err.Error(), `CREATE DATABASE "plant"`) {
			t.Errorf("write: %v, want a retryable error with the fix", err)
		}
	})

	t.Run("a retention policy that does not exist", func(t *testing.T) {
		if err := s.CreateDatabase("rp"); err != nil {
			t.Fatal(err)
		}
		sink := influxdb.New(influxdb.Config{URL: s.URL, Bucket: "rp/weekly"}, sluice.StreamRecords)
		defer sink.Close(ctx)
		err := sink.Connect(ctx)
		if err == nil || !strings.Contains(err.Error(), `InfluxDB database "rp" has no retention policy "weekly"`) ||
			!strings.Contains(err.Error(), `CREATE RETENTION POLICY "weekly" ON "rp"`) {
			t.Errorf("connect: %v", err)
		}
	})

	t.Run("create: true", func(t *testing.T) {
		sink := influxdb.New(influxdb.Config{URL: s.URL, Bucket: "made/autogen", Create: true}, sluice.StreamRecords)
		defer sink.Close(ctx)
		if err := sink.Connect(ctx); err != nil {
			t.Fatalf("connect: %v", err)
		}
		if err := sink.Write(ctx, point); err != nil {
			t.Fatalf("write: %v", err)
		}
		// Dropped while sluice runs: the next write makes it again.
		if _, err := s.Query("", `DROP DATABASE "made"`); err != nil {
			t.Fatal(err)
		}
		if err := sink.Write(ctx, point); err != nil {
			t.Fatalf("write after DROP DATABASE: %v", err)
		}
		body, err := s.Query("made", `SELECT count(temperature) FROM boiler`)
		if err != nil || !strings.Contains(string(body), `"values":[["1970-01-01T00:00:00Z",1]]`) {
			t.Errorf("made: %s %v", body, err)
		}
	})
}
