package influxdb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/influxd"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/sinks/influxdb"
)

func record(device string, fields []sluice.Field, at time.Time) sluice.Event {
	return sluice.Event{
		Stream:  sluice.StreamRecords,
		Message: &sluice.Message{Topic: "plant/north/l1/" + device + "/telemetry", Received: at},
		Record: &sluice.Record{Rule: "boiler", Time: at, Tags: []sluice.Tag{{Key: "device", Value: device}, {Key: "site", Value: "north"}},
			Fields: fields},
	}
}

func query(t *testing.T, srv *influxd.Server, q string) [][]any {
	t.Helper()
	body, err := srv.Query("db", q)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Results []struct{ Series []struct{ Values [][]any } }
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) == 0 || len(resp.Results[0].Series) == 0 {
		return nil
	}
	return resp.Results[0].Series[0].Values
}

func TestWritesPointsAndClassifiesErrors(t *testing.T) {
	s := testsvc.Influxd(t)
	if err := s.CreateDatabase("db"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sink := influxdb.New(influxdb.Config{URL: s.URL, Bucket: "db/autogen", TimeField: "ts", Fields: []string{"temperature", "ok", "ts"},
		Tags: map[string]string{"device": "{device}", "line": "{2}"}}, sluice.StreamRecords)
	if err := sink.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

	t.Run("points with tags, chosen fields and the payload's time", func(t *testing.T) {
		err := sink.Write(ctx, []sluice.Event{
			record("b1", []sluice.Field{{Name: "temperature", Value: 91.5}, {Name: "ok", Value: true}, {Name: "ignored", Value: "x"}, {Name: "ts", Value: float64(t0.UnixMilli())}}, time.Now()),
			record("b2", []sluice.Field{{Name: "temperature", Value: 80.0}, {Name: "ok", Value: false}, {Name: "ts", Value: float64(t0.Add(time.Second).UnixMilli())}}, time.Now()),
		})
		if err != nil {
			t.Fatal(err)
		}
		rows := query(t, s, `SELECT temperature, ok, ignored, device, line FROM boiler ORDER BY time`)
		want := `[[2026-11-25T12:00:00Z 91.5 true <nil> b1 l1] [2026-11-25T12:00:01Z 80 false <nil> b2 l1]]`
		if got := fmt2(rows); got != want {
			t.Fatalf("rows\n got %s\nwant %s", got, want)
		}
	})

	t.Run("field type conflict is permanent", func(t *testing.T) {
		err := sink.Write(ctx, []sluice.Event{record("b3", []sluice.Field{{Name: "temperature", Value: "hot"}, {Name: "ts", Value: float64(t0.UnixMilli())}}, time.Now())})
		if err == nil || !sluice.IsPermanent(err) {
			t.Fatalf("got %v, want a permanent error", err)
		}
	})

	t.Run("an event that cannot be a point is permanent, the rest is written", func(t *testing.T) {
		err := sink.Write(ctx, []sluice.Event{
			record("b4", []sluice.Field{{Name: "ignored", Value: 1.0}}, time.Now()),                                            // no chosen field
			record("b5", []sluice.Field{{Name: "temperature", Value: 70.0}, {Name: "ts", Value: "yesterday"}}, time.Now()),     // bad time
			record("b6", []sluice.Field{{Name: "temperature", Value: 71.0}, {Name: "ts", Value: float64(t0.UnixMilli())}}, t0), // fine
		})
		var be *sluice.BatchError
		if !errors.As(err, &be) || len(be.Errs) != 2 || !sluice.IsPermanent(be.Errs[0]) || !sluice.IsPermanent(be.Errs[1]) {
			t.Fatalf("got %v, want items 0 and 1 permanent", err)
		}
		if rows := query(t, s, `SELECT temperature FROM boiler WHERE device = 'b6'`); len(rows) != 1 {
			t.Fatalf("b6 not written: %v", rows)
		}
	})

	t.Run("alerts", func(t *testing.T) {
		alerts := influxdb.New(influxdb.Config{URL: s.URL, Bucket: "db/autogen"}, sluice.StreamAlerts)
		a := &sluice.Alert{Rule: "boiler", Severity: "critical", Status: sluice.AlertResolved, Device: "b1", Series: "b1",
			Value: 60.0, Message: "ok again", Time: t0.Add(time.Minute), Since: t0, Tags: []sluice.Tag{{Key: "site", Value: "north"}}}
		if err := alerts.Write(ctx, []sluice.Event{{Stream: sluice.StreamAlerts, Message: &sluice.Message{}, Alert: a}}); err != nil {
			t.Fatal(err)
		}
		rows := query(t, s, `SELECT firing, duration_s, value, message, status, severity, site FROM alerts`)
		if got, want := fmt2(rows), `[[2026-11-25T12:01:00Z 0 60 60 ok again resolved critical north]]`; got != want {
			t.Fatalf("rows\n got %s\nwant %s", got, want)
		}
	})

	t.Run("unreachable is retryable", func(t *testing.T) {
		down := influxdb.New(influxdb.Config{URL: "http://127.0.0.1:1", Bucket: "db", Timeout: time.Second}, sluice.StreamRecords)
		err := down.Write(ctx, []sluice.Event{record("b1", []sluice.Field{{Name: "temperature", Value: 1.0}}, t0)})
		if err == nil || sluice.IsPermanent(err) {
			t.Fatalf("got %v, want a retryable error", err)
		}
	})
}

// fmt2 renders InfluxQL rows compactly: [[time v1 v2 ...] ...].
func fmt2(rows [][]any) string {
	var b strings.Builder
	b.WriteString("[")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString("[")
		for j, v := range r {
			if j > 0 {
				b.WriteString(" ")
			}
			fmt.Fprint(&b, v)
		}
		b.WriteString("]")
	}
	b.WriteString("]")
	return b.String()
}
