package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// TestChaos runs each fault case: a numbered stream of QoS 1 messages is
// published while something fails, and every acknowledged message must be
// found in every sink afterwards.
func TestChaos(t *testing.T) {
	sc := suiteScale()
	t.Run("influxdb_outage", func(t *testing.T) { sinkOutage(t, sc, "influx") })
	t.Run("kafka_outage", func(t *testing.T) { sinkOutage(t, sc, "kafka") })
	t.Run("sigkill", func(t *testing.T) { sigkill(t, sc) })
	t.Run("permanent_errors", func(t *testing.T) { permanentErrors(t, sc) })
	t.Run("bound_block", func(t *testing.T) { bound(t, sc, "block") })
	t.Run("bound_drop_oldest", func(t *testing.T) { bound(t, sc, "drop_oldest") })
	t.Run("torn_journal_tail", func(t *testing.T) { tornTail(t, sc) })
	t.Run("silent_kafka_at_start", func(t *testing.T) { silentKafkaAtStart(t, sc) })
	t.Run("disk_full", func(t *testing.T) { diskFull(t, sc) })
	t.Run("journal_bit_flip", func(t *testing.T) { bitFlip(t, sc) })
}

// verify checks every acknowledged message is in InfluxDB and Kafka, and
// reports the numbers.
func verify(t *testing.T, svc *services, st *stream, extra string) {
	t.Helper()
	published, acked, refused := st.counts()
	var influx, kafka map[int]bool
	ok := waitFor(90*time.Second, func() bool {
		influx = svc.influxSeqs()
		return len(st.missing(influx)) == 0
	})
	waitFor(60*time.Second, func() bool {
		kafka = svc.kafkaSeqs(acked)
		return len(st.missing(kafka)) == 0
	})
	if !ok {
		t.Errorf("InfluxDB is missing %d acknowledged messages, e.g. %v", len(st.missing(influx)), first(st.missing(influx)))
	}
	if m := st.missing(kafka); len(m) > 0 {
		t.Errorf("Kafka is missing %d acknowledged messages, e.g. %v", len(m), first(m))
	}
	line := fmt.Sprintf("published %d, acknowledged %d, refused %d, found in influxdb %d, kafka %d", published, acked, refused, len(influx), len(kafka))
	if extra != "" {
		line += ", " + extra
	}
	report(t, line)
}

func first(s []int) []int {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

// sinkOutage takes one sink's service down for a while in the middle of the
// stream: the real influxd process is stopped and started again on its data;
// the Kafka stand-in is cut off the network and restored (kfake's own
// restart from disk loses its last acknowledged record, so a stop and start
// of it could not tell sluice's losses from its own).
func sinkOutage(t *testing.T, sc scale, which string) {
	svcs := startServices(t)
	dir := t.TempDir()
	svc := inProcess(t, config(t, svcs, dir, "", "influx", "kafka"))
	st := newStream(svc.Broker().Addr("tcp"))
	third := sc.messages / 3
	st.run(t, 0, third, nil)
	if which == "influx" {
		svcs.stopInflux()
	} else {
		svcs.kafka.Cut()
	}
	down := time.Now()
	st.run(t, third, 2*third, nil)
	time.Sleep(time.Until(down.Add(sc.outage))) // the outage lasts its length however fast the stream was
	if which == "influx" {
		svcs.startInflux()
	} else {
		svcs.kafka.Restore()
	}
	st.run(t, 2*third, sc.messages, nil)
	verify(t, svcs, st, fmt.Sprintf("%s down %v", which, sc.outage))
}

// sigkill kills sluice (a process) mid-stream with SIGKILL and starts it
// again on the same data.
func sigkill(t *testing.T, sc scale) {
	svcs := startServices(t)
	dir := t.TempDir()
	path := config(t, svcs, dir, "", "influx", "kafka")
	proc := testsvc.StartSluice(t, sluiceBin, path)
	st := newStream(proc.Addr)
	half := sc.messages / 2
	st.run(t, 0, half, nil)
	// Kill while the stream runs: the publisher's message in flight is
	// sent again after the restart.
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		proc.Stop(syscall.SIGKILL)
		next := testsvc.StartSluice(t, sluiceBin, path)
		st.setAddr(next.Addr)
	}()
	st.run(t, half, sc.messages, nil)
	<-killed
	verify(t, svcs, st, "sluice killed once")
}

// permanentErrors publishes some messages whose value has the wrong type
// for InfluxDB (a field type conflict: 400, permanent). They must go to the
// dead-letter file; the others to InfluxDB; none lost.
func permanentErrors(t *testing.T, sc scale) {
	svcs := startServices(t)
	dir := t.TempDir()
	svc := inProcess(t, config(t, svcs, dir, "", "influx", "kafka", "dead-letters"))
	st := newStream(svc.Broker().Addr("tcp"))
	bad := map[int]bool{}
	st.body = func(seq int) string {
		if seq > 0 && seq%37 == 0 {
			return fmt.Sprintf(`{"seq":%d,"v":"not a number"}`, seq)
		}
		return fmt.Sprintf(`{"seq":%d,"v":%d.5}`, seq, seq%100)
	}
	for seq := 1; seq < sc.messages; seq++ {
		if seq%37 == 0 {
			bad[seq] = true
		}
	}
	st.run(t, 0, sc.messages, nil)
	var dead map[int]bool
	waitFor(60*time.Second, func() bool {
		dead = deadLetterSeqs(t, filepath.Join(dir, "dead-letters.jsonl"))
		return len(dead) >= len(bad)
	})
	influx := map[int]bool{}
	waitFor(60*time.Second, func() bool {
		influx = svcs.influxSeqs()
		return len(influx)+len(dead) >= sc.messages
	})
	for seq := range bad {
		if !dead[seq] {
			t.Errorf("seq %d was refused by InfluxDB but is not in the dead letters", seq)
		}
		if influx[seq] {
			t.Errorf("seq %d with a string value is in InfluxDB", seq)
		}
	}
	for seq := range sc.messages {
		if st.isAcked(seq) && !bad[seq] && !influx[seq] {
			t.Errorf("seq %d is missing from InfluxDB", seq)
			break
		}
	}
	kafka := svcs.kafkaSeqs(sc.messages)
	if m := st.missing(kafka); len(m) > 0 {
		t.Errorf("Kafka is missing %d acknowledged messages", len(m))
	}
	published, acked, _ := st.counts()
	report(t, fmt.Sprintf("published %d, acknowledged %d, found in influxdb %d, dead letters %d (want %d), kafka %d",
		published, acked, len(influx), len(dead), len(bad), len(kafka)))
}

func deadLetterSeqs(t *testing.T, path string) map[int]bool {
	found := map[int]bool{}
	f, err := os.Open(path)
	if err != nil {
		return found
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var dl struct {
			Stage, Sink, Reason string
			Payload             string
		}
		if err := json.Unmarshal(sc.Bytes(), &dl); err != nil {
			t.Errorf("dead letter %q: %v", sc.Text(), err)
			continue
		}
		var p struct{ Seq int }
		if json.Unmarshal([]byte(dl.Payload), &p) == nil && dl.Stage == "sink" && dl.Sink == "influx" {
			found[p.Seq] = true
		}
	}
	return found
}

// bound fills a small journal while InfluxDB is down. With block, MQTT 5
// publishers are refused ("quota exceeded") once it is full, and everything
// accepted arrives later. With drop_oldest, everything is accepted, the
// oldest records go (counted), and what was not dropped arrives.
func bound(t *testing.T, sc scale, overflow string) {
	svcs := startServices(t)
	dir := t.TempDir()
	extra := fmt.Sprintf("    journal: {max_bytes: 256KiB, segment_bytes: 64KiB, overflow: %s}", overflow)
	svc := inProcess(t, config(t, svcs, dir, extra, "influx"))
	svcs.stopInflux()
	st := newStream(svc.Broker().Addr("tcp"))
	// Payloads of about 1 KB fill 256 KiB in a few hundred messages.
	pad := fmt.Sprintf("%01000d", 0)
	st.body = func(seq int) string { return fmt.Sprintf(`{"seq":%d,"v":1.5,"pad":"%s"}`, seq, pad) }
	n := max(sc.messages, 600)
	st.run(t, 0, n, nil)
	_, acked, refused := st.counts()
	stats, _ := svc.JournalStats("chaos")
	svcs.startInflux()
	var influx map[int]bool
	switch overflow {
	case "block":
		if refused == 0 {
			t.Errorf("the journal never filled: no publish was refused")
		}
		if !waitFor(90*time.Second, func() bool { influx = svcs.influxSeqs(); return len(st.missing(influx)) == 0 }) {
			t.Errorf("InfluxDB is missing %d acknowledged messages", len(st.missing(influx)))
		}
	case "drop_oldest":
		if refused != 0 {
			t.Errorf("%d publishes refused under drop_oldest", refused)
		}
		waitFor(90*time.Second, svc.CaughtUp)
		influx = svcs.influxSeqs()
		after, _ := svc.JournalStats("chaos")
		stats.Dropped, stats.DroppedMessages = after.Dropped, after.DroppedMessages
		var skipped uint64
		for _, r := range after.Readers {
			if r.Name == "sink:influx" {
				skipped = r.Skipped
			}
		}
		if stats.Dropped == 0 || skipped == 0 {
			t.Errorf("nothing was dropped (dropped %d, skipped by the sink %d)", stats.Dropped, skipped)
		}
		// Everything missing was dropped (each message is two journal
		// records: the message and what the rules made of it), and the
		// newest messages, which were never at risk, are all there.
		missing := st.missing(influx)
		if uint64(len(missing)) > skipped {
			t.Errorf("%d acknowledged messages missing, more than the %d records dropped", len(missing), skipped)
		}
		for seq := n - 20; seq < n; seq++ {
			if !influx[seq] {
				t.Errorf("message %d, among the newest, is missing", seq)
			}
		}
	}
	report(t, fmt.Sprintf("published %d, acknowledged %d, refused %d, journal bound 256KiB (held %dKiB at the end of the outage), dropped %d records (%d messages), found in influxdb %d",
		n, acked, refused, stats.Bytes>>10, stats.Dropped, stats.DroppedMessages, len(influx)))
}

// tornTail kills sluice, then appends half a record to its journal (a
// write cut short by the crash), and starts it again: it must recover,
// cutting the torn bytes, and deliver every acknowledged message.
func tornTail(t *testing.T, sc scale) {
	svcs := startServices(t)
	dir := t.TempDir()
	path := config(t, svcs, dir, "", "influx", "kafka")
	proc := testsvc.StartSluice(t, sluiceBin, path)
	st := newStream(proc.Addr)
	half := sc.messages / 2
	st.run(t, 0, half, nil)
	proc.Stop(syscall.SIGKILL)

	segs, _ := filepath.Glob(filepath.Join(dir, "data", "journal", "chaos", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no journal segment")
	}
	sort.Strings(segs)
	last := segs[len(segs)-1]
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A frame header promising 500 bytes, and only 20 of them.
	f.Write([]byte{0xf4, 0x01, 0, 0, 0xde, 0xad, 0xbe, 0xef})
	f.Write(make([]byte, 20))
	f.Close()

	next := testsvc.StartSluice(t, sluiceBin, path)
	st.setAddr(next.Addr)
	st.run(t, half, sc.messages, nil)
	recovered := waitFor(10*time.Second, func() bool { return listeningAfterRecovery.MatchString(next.Logs()) })
	if !recovered {
		t.Errorf("sluice did not report cutting the torn tail:\n%s", next.Logs())
	}
	verify(t, svcs, st, "torn tail cut on restart")
}

// silentKafkaAtStart starts sluice (a process) while its Kafka address
// takes connections and never answers. sluice must start and take the
// stream anyway, stop on SIGTERM with the backlog kept in its journal, start
// again the same way, and deliver everything once a real Kafka answers on
// that address.
func silentKafkaAtStart(t *testing.T, sc scale) {
	silent := testsvc.Silent(t)
	svcs := &services{t: t, influxDir: t.TempDir(), kafkaPort: silent.Port()}
	svcs.startInflux()
	t.Cleanup(func() {
		if svcs.influx != nil {
			svcs.influx.Stop()
		}
		if svcs.kafka != nil {
			svcs.kafka.Close()
		}
	})
	if err := svcs.influx.CreateDatabase("chaos"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := config(t, svcs, dir, "", "influx", "kafka")
	// A stop waits this long for the sinks, not the default 30s.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "shutdown_timeout: 2s")
	f.Close()

	proc := testsvc.StartSluice(t, sluiceBin, path)
	st := newStream(proc.Addr)
	third := sc.messages / 3
	st.run(t, 0, third, nil)
	stopped := make(chan struct{})
	go func() { proc.Stop(syscall.SIGTERM); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(90 * time.Second):
		t.Fatalf("sluice did not stop on SIGTERM while Kafka was silent:\n%s", proc.Logs())
	}
	if code := proc.ExitCode(); code != 0 {
		t.Errorf("exit code %d on SIGTERM:\n%s", code, proc.Logs())
	}

	next := testsvc.StartSluice(t, sluiceBin, path)
	st.setAddr(next.Addr)
	st.run(t, third, 2*third, nil)
	silent.Close()
	svcs.startKafka()
	st.run(t, 2*third, sc.messages, nil)
	verify(t, svcs, st, "kafka silent at start, sluice stopped with SIGTERM and started again before it answered")
}

var listeningAfterRecovery = regexp.MustCompile(`journal recovered from an unclean stop.*cut_bytes=[1-9]`)

// readKafka reads the whole topic (up to want records, or until nothing more
// comes) and returns the record values.
func readKafka(t *testing.T, brokers []string, topic string, want int) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafkago.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	var values [][]byte
	for _, p := range parts {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		last, err := lastOffset(brokers[0], topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < last; {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Errorf("kafka partition %d: %v", p.ID, err)
				break
			}
			values = append(values, m.Value)
			off = m.Offset + 1
		}
		r.Close()
	}
	return values
}

func lastOffset(broker, topic string, partition int) (int64, error) {
	conn, err := kafkago.DialLeader(context.Background(), "tcp", broker, topic, partition)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ReadLastOffset()
}
