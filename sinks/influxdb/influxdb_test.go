package influxdb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
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
		var be *sluice.BatchError
		if !errors.As(err, &be) || len(be.Errs) != 1 || !sluice.IsPermanent(be.Errs[0]) {
			t.Fatalf("got %v, want the point refused for good", err)
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

// TestPartialWriteRefusesOnlyTheNamedPoints writes batches in which a few
// points have a string where InfluxDB holds a float, to a real influxd
// behind a proxy that counts the requests. InfluxDB stores the others and
// names the field in its partial-write error: exactly the bad points are
// refused, each with InfluxDB's reason, the others are stored, and the
// batch costs one request per reason InfluxDB gives, not one per point
// (before, the sink reported the whole batch refused, and the writer wrote
// each point alone).
func TestPartialWriteRefusesOnlyTheNamedPoints(t *testing.T) {
	s := testsvc.Influxd(t)
	if err := s.CreateDatabase("db"); err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/write") {
			requests.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	ctx := context.Background()
	sink := influxdb.New(influxdb.Config{URL: front.URL, Bucket: "db/autogen"}, sluice.StreamRecords)
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	if err := sink.Write(ctx, []sluice.Event{record("first", []sluice.Field{{Name: "v", Value: 1.5}, {Name: "w", Value: 1.5}}, t0)}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		bad      map[int]string // index -> the field given a string
		requests int32
	}{
		{"one reason", map[int]string{7: "v", 19: "v", 33: "v"}, 1},
		{"two reasons", map[int]string{3: "v", 11: "w", 20: "v"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 40
			var batch []sluice.Event
			for i := range n {
				fields := []sluice.Field{{Name: "v", Value: float64(i)}, {Name: "w", Value: 2.5}}
				if f, ok := tc.bad[i]; ok {
					fields = []sluice.Field{{Name: "v", Value: 1.0}, {Name: "w", Value: 1.0}}
					fields[map[string]int{"v": 0, "w": 1}[f]].Value = "hot"
				}
				batch = append(batch, record(fmt.Sprintf("%s-%d", strings.ReplaceAll(tc.name, " ", "-"), i), fields, t0.Add(time.Duration(i)*time.Second)))
			}
			before := requests.Load()
			err := sink.Write(ctx, batch)
			var be *sluice.BatchError
			if !errors.As(err, &be) {
				t.Fatalf("got %v, want the bad points named", err)
			}
			for i := range n {
				ierr, refused := be.Errs[i]
				f, isBad := tc.bad[i]
				switch {
				case isBad && !refused:
					t.Errorf("point %d (%s a string) not refused", i, f)
				case !isBad && refused:
					t.Errorf("good point %d refused: %v", i, ierr)
				case isBad && (!sluice.IsPermanent(ierr) || !strings.Contains(ierr.Error(), `field type conflict: input field "`+f+`"`)):
					t.Errorf("point %d: %v, want permanent with InfluxDB's reason", i, ierr)
				}
			}
			rows := query(t, s, fmt.Sprintf(`SELECT count(v) FROM boiler WHERE device =~ /^%s-/`, strings.ReplaceAll(tc.name, " ", "-")))
			if got := fmt2(rows); got != fmt.Sprintf("[[1970-01-01T00:00:00Z %d]]", n-len(tc.bad)) {
				t.Errorf("stored %s, want %d points", got, n-len(tc.bad))
			}
			if got := requests.Load() - before; got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
		})
	}

	t.Run("refused as a whole", func(t *testing.T) {
		// Two points disagree on the type of a field InfluxDB does not
		// have yet: it refuses the request and names no point. The batch
		// is refused for good as a whole (the writer then writes halves).
		err := sink.Write(ctx, []sluice.Event{
			record("whole-1", []sluice.Field{{Name: "u", Value: int64(1)}}, t0),
			record("whole-2", []sluice.Field{{Name: "u", Value: "x"}}, t0),
		})
		var be *sluice.BatchError
		if err == nil || errors.As(err, &be) || !sluice.IsPermanent(err) {
			t.Fatalf("got %v, want one permanent error for the batch", err)
		}
	})
}
