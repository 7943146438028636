package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// diskFull runs sluice with data_dir on a small tmpfs and fills it in the
// middle of the stream: publishes are refused (0x97) while the journal
// cannot write, and /readyz is not ready; space comes back, and sluice
// takes messages again by itself. Every acknowledged message must arrive.
func diskFull(t *testing.T, sc scale) {
	svcs := startServices(t)
	dir := testsvc.Tmpfs(t, 32<<20)
	svc := inProcess(t, config(t, svcs, dir, "", "influx", "kafka"))
	st := newStream(svc.Broker().Addr("tcp"))
	third := sc.messages / 3
	st.run(t, 0, third, nil)

	free := testsvc.Fill(t, dir)
	full := time.Now()
	// Publish until one is refused: the journal's last page may take a few.
	for seq := third; ; seq++ {
		if seq == 2*third+1000 {
			t.Fatal("no publish refused on a full disk")
		}
		st.run(t, seq, seq+1, nil)
		if _, _, refused := st.counts(); refused > 0 {
			st.run(t, seq+1, 2*third, nil)
			break
		}
	}
	h := svc.Health(time.Now())
	notReady := !h.Ready && strings.Contains(strings.Join(h.Problems, "\n"), "journal cannot write")
	if !notReady {
		t.Errorf("not reported on a full disk: ready %v, problems %q", h.Ready, h.Problems)
	}
	time.Sleep(time.Until(full.Add(sc.outage))) // the disk stays full its length however fast the stream was
	free()
	if !waitFor(30*time.Second, func() bool { return svc.Health(time.Now()).Ready }) {
		t.Errorf("not ready again once space was back: %q", svc.Health(time.Now()).Problems)
	}
	_, _, refusedWhileFull := st.counts()
	st.run(t, 2*third, sc.messages, nil)
	if _, _, refused := st.counts(); refused != refusedWhileFull {
		t.Errorf("%d publishes refused once space was back", refused-refusedWhileFull)
	}
	verify(t, svcs, st, fmt.Sprintf("disk full for %v (%d publishes refused, 0x97), ready again after", sc.outage, refusedWhileFull))
}

// bitFlip stops sluice while InfluxDB is down, so that what it has not
// written waits in the journal, flips one bit in the middle of the
// journal's largest segment, and starts sluice again: at most the one
// record holding the bit is lost (one message, if the record was what the
// rules made of it), counted; everything after it in the segment arrives.
func bitFlip(t *testing.T, sc scale) {
	svcs := startServices(t)
	dir := t.TempDir()
	path := config(t, svcs, dir, "", "influx", "kafka")
	svcs.stopInflux()
	cfg, err := pipelines.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	start := func() *pipelines.Service {
		svc, err := pipelines.New(cfg, pipelines.Options{DrainTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return svc
	}
	svc := start()
	st := newStream(svc.Broker().Addr("tcp"))
	half := sc.messages / 2
	st.run(t, 0, half, nil)
	svc.Close(context.Background())

	segs, _ := filepath.Glob(filepath.Join(dir, "data", "journal", "chaos", "*.seg"))
	sort.Slice(segs, func(i, k int) bool { return size(segs[i]) > size(segs[k]) })
	if len(segs) == 0 || size(segs[0]) < 4096 {
		t.Fatalf("no journal segment holds the backlog: %v", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	at := len(b) / 2
	b[at] ^= 0x10
	if err := os.WriteFile(segs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}

	svc = start()
	defer svc.Close(context.Background())
	svcs.startInflux()
	st.setAddr(svc.Broker().Addr("tcp"))
	st.run(t, half, sc.messages, nil)

	stats, _ := svc.JournalStats("chaos")
	if stats.Damaged != 1 {
		t.Errorf("one flipped bit: %d damaged records counted, want 1 (%s)", stats.Damaged, stats.Damage)
	}
	if notes := strings.Join(svc.Health(time.Now()).Notes, "\n"); !strings.Contains(notes, "1 damaged records skipped") {
		t.Errorf("the damage is not named in /readyz: %q", notes)
	}
	// InfluxDB may miss the one message whose derived record held the bit;
	// Kafka had everything before the flip.
	var influx map[int]bool
	waitFor(90*time.Second, func() bool { influx = svcs.influxSeqs(); return len(st.missing(influx)) <= 1 })
	if m := st.missing(influx); len(m) > 1 {
		t.Errorf("InfluxDB is missing %d acknowledged messages after one flipped bit, e.g. %v", len(m), first(m))
	}
	kafka := svcs.kafkaSeqs(sc.messages)
	if m := st.missing(kafka); len(m) > 0 {
		t.Errorf("Kafka is missing %d acknowledged messages, e.g. %v", len(m), first(m))
	}
	published, acked, _ := st.counts()
	report(t, fmt.Sprintf("published %d, acknowledged %d, one bit flipped at offset %d of %s (%d bytes): %d record damaged (%s), %d messages missing from influxdb, %d from kafka",
		published, acked, at, filepath.Base(segs[0]), len(b), stats.Damaged, stats.Damage, len(st.missing(influx)), len(st.missing(kafka))))
}

func size(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
