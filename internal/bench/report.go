package bench

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is what an invocation measured.
type Report struct {
	Started  time.Time
	Machine  string
	LoadText string
	// Separate: the load side ran in a child process, so the CPU and
	// memory of the process under test are its own.
	Separate bool
	Runs     []*RunResult
	Scale    []*ScaleResult
	Series   []*SeriesResult
	samples  []sample
	qos      byte
}

// RunResult is one throughput run: the load against one target.
type RunResult struct {
	Name, Target string
	Load         LoadReport
	// BrokerIn is what the broker took in (the baseline's hook, sluice's
	// sluice_messages_received_total).
	BrokerIn int64
	// Counted: arrivals were counted in InfluxDB (a count query) and, with
	// KafkaCounted, in Kafka (a consumer).
	Counted, KafkaCounted bool
	InfluxCount           int64
	AlertsSluice          int64
	DeadLetters           int64
	SinkWritten           map[string]float64
	// SluiceAck is sluice's own sluice_ack_latency_seconds (receipt to
	// sink acknowledgement): p50, p95, p99 and the top of the highest
	// bucket used, interpolated within its coarse buckets.
	SluiceAck [4]bucketed
	// SinkWrites is each sink's sluice_sink_write_seconds, by sink name:
	// how long one batch write took, request to acknowledgement (the same
	// four figures).
	SinkWrites map[string][4]bucketed
	// Drain is how long the sinks took to catch up after the load.
	Drain time.Duration
	// Wall, CPU and PeakRSS are of the process under test, from the start
	// of the load to the end of the drain; InfluxdCPU is influxd's.
	Wall, CPU, InfluxdCPU time.Duration
	PeakRSS               int64
	// Peers are a cluster run's other nodes (rules, sinks), each its own
	// process.
	Peers []peer
	// OthersCPU is the CPU time other processes of the machine used
	// meanwhile: on a shared machine, the noise in the figures.
	OthersCPU time.Duration
	Problems  []string
}

// ScaleResult is one connection-scale run.
type ScaleResult struct {
	Name, Target string
	Load         LoadReport
	Connected    int64
	// IdleRSS before the devices connect and RSS after they settled (both
	// after a GC that returns freed memory to the system); PerConn is the
	// difference per connection, HeapPerConn the Go heap and stacks part.
	IdleRSS, RSS      int64
	RawRSS            int64 // RSS connected, before that GC
	PerConn           float64
	HeapPerConn       float64
	GoroutinesPerConn float64
	Problems          []string
}

func (r *ScaleResult) connectRate() float64 {
	if r.Load.Fleet.ConnectTime <= 0 {
		return 0
	}
	return float64(r.Connected) / r.Load.Fleet.ConnectTime.Seconds()
}

// sample is one progress line.
type sample struct {
	Run       string
	T         time.Duration
	Phase     string
	Connected int64
	Sent      int64 // in the last second
	Acked     int64
	Kafka     int64
	Influx    int64
	Cores     float64
	RSS       int64
	Extra     string
}

func (s sample) line(devices int, influx, kafka bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %4.0fs %-11s dev %s/%s  sent %s/s  acked %s/s", s.Run, s.T.Seconds(), s.Phase,
		count(s.Connected), count(int64(devices)), count(s.Sent), count(s.Acked))
	if kafka {
		fmt.Fprintf(&b, "  kafka %s/s", count(s.Kafka))
	}
	if influx {
		fmt.Fprintf(&b, "  influx %s/s", count(s.Influx))
	}
	if s.Extra != "" {
		fmt.Fprintf(&b, " | %s", s.Extra)
	}
	fmt.Fprintf(&b, " | cpu %.2f rss %s", s.Cores, mb(s.RSS))
	return b.String()
}

func newReport(c *Config, nofile uint64) *Report {
	l := &c.Load
	rate := "as fast as acknowledged"
	if l.Rate > 0 {
		rate = count(int64(l.Rate)) + " msg/s offered"
	}
	if c.Scale && l.Idle {
		rate = "idle"
	}
	length := l.Duration.String()
	if l.Messages > 0 {
		length = count(l.Messages) + " messages"
	}
	shape := l.Shape + " JSON"
	if l.Shape == ShapeArray || l.Shape == ShapeMixed {
		shape += fmt.Sprintf(" (arrays of %d readings)", l.Readings)
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	loadavg, _ := os.ReadFile("/proc/loadavg")
	if c.Scale {
		length = fmt.Sprintf("held %v once connected", c.Settle)
	}
	if l.Series > 0 {
		length = count(l.Series) + " series, one message each"
	}
	r := &Report{
		Started: time.Now(),
		Machine: fmt.Sprintf("%d cores (GOMAXPROCS %d), Linux %s, %s; open files limit %d; load average at start %s",
			runtime.NumCPU(), runtime.GOMAXPROCS(0), strings.TrimSpace(string(kernel)), runtime.Version(), nofile,
			strings.Join(strings.Fields(string(loadavg))[:min(3, len(strings.Fields(string(loadavg))))], " ")),
		LoadText: fmt.Sprintf("%d devices, QoS %d, MQTT %s, %s of %d B per reading, %s, for %s (ramp %v), in flight %d per device, %s client",
			l.Devices, l.QoS, map[int]string{3: "3.1.1", 5: "5"}[l.MQTT], shape, l.Size, rate, length, l.Ramp, l.Inflight, l.Client),
		qos: l.QoS,
	}
	if len(l.Sources) > 0 {
		r.LoadText += fmt.Sprintf(", from %d source addresses", len(l.Sources))
	}
	return r
}

func (r *Report) add(run *RunResult)      { r.Runs = append(r.Runs, run) }
func (r *Report) addScale(s *ScaleResult) { r.Scale = append(r.Scale, s) }

// rate is the acknowledged messages per second in the steady window (sent,
// at QoS 0).
func (r *RunResult) rate(qos byte) float64 {
	n := r.Load.Fleet.WindowAcked
	if qos == 0 {
		n = r.Load.Fleet.WindowSent
	}
	return perSecond(n, r.Load.Fleet.Window)
}

// deliveredRate is the readings per second that reached the sinks, from
// the first publish until the sinks had caught up after the load.
func (r *RunResult) deliveredRate(qos byte) float64 {
	return perSecond(r.expected(qos), r.Wall-r.Load.Fleet.ConnectTime)
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// expected is how many readings must arrive in each sink: those
// acknowledged (all those sent, at QoS 0).
func (r *RunResult) expected(qos byte) int64 {
	if qos == 0 {
		return r.Load.Fleet.SentReadings
	}
	return r.Load.Fleet.AckedReadings
}

// kafkaLost is the acknowledged readings the consumer never saw (at QoS 0:
// those sent, less those seen).
func (r *RunResult) kafkaLost(qos byte) int64 {
	if !r.KafkaCounted {
		return 0
	}
	if qos == 0 {
		return max(0, r.expected(qos)-r.Load.Kafka.Unique)
	}
	return r.Load.KafkaLost
}

// influxLost is how many readings InfluxDB lacks: a lower bound, as the
// count may include readings sent but never acknowledged.
func (r *RunResult) influxLost(qos byte) int64 { return max(0, r.expected(qos)-r.InfluxCount) }

// Lost is how much of what a run acknowledged went missing: readings
// missing from a sink (Kafka, InfluxDB, whichever lacks more) or, for the
// bare broker, messages its hook did not count.
func (r *Report) Lost(run *RunResult) int64 {
	if run.Counted {
		return max(run.kafkaLost(r.qos), run.influxLost(r.qos))
	}
	if run.Name == "baseline" {
		return max(0, run.Load.Fleet.Acked-run.BrokerIn)
	}
	return 0
}

func (r *Report) baseline() *RunResult {
	for _, run := range r.Runs {
		if run.Name == "baseline" {
			return run
		}
	}
	return nil
}

func (r *Report) ratio(run *RunResult) string {
	bl := r.baseline()
	if bl == nil || run == bl || bl.rate(r.qos) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", run.rate(r.qos)/bl.rate(r.qos))
}

func (r *Report) markdown(w io.Writer) {
	fmt.Fprintf(w, "# sluice bench, %s\n\n", r.Started.Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "- Machine: %s\n", r.Machine)
	fmt.Fprintf(w, "- Load: %s\n", r.LoadText)
	if r.Separate {
		fmt.Fprintln(w, "- The load generator, the Kafka stand-in (kfake) and the Kafka consumer run in a child process; influxd in its own. CPU and RSS below are the process under test alone (sluice, or the bare broker).")
	} else {
		fmt.Fprintln(w, "- The load generator, the Kafka stand-in and the Kafka consumer ran in the same process as sluice: CPU and RSS include them.")
	}
	if len(r.Runs) > 0 {
		r.runTables(w)
		r.clusterTable(w)
	}
	if len(r.Scale) > 0 {
		r.scaleTable(w)
	}
	if len(r.Series) > 0 {
		r.seriesTable(w)
	}
	for _, run := range r.Runs {
		for _, p := range run.Problems {
			fmt.Fprintf(w, "- **%s**: %s\n", run.Name, p)
		}
	}
	for _, s := range r.Scale {
		for _, p := range s.Problems {
			fmt.Fprintf(w, "- **%s**: %s\n", s.Name, p)
		}
	}
	for _, s := range r.Series {
		for _, p := range s.Problems {
			fmt.Fprintf(w, "- **%s**: %s\n", s.Name, p)
		}
	}
}

func (r *Report) runTables(w io.Writer) {
	q := r.qos
	fmt.Fprint(w, "\n## Throughput\n\n")
	fmt.Fprintln(w, "| run | target | sent msg/s | acked msg/s | vs baseline | delivered readings/s | messages acked | readings acked | window | connect |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, run := range r.Runs {
		f := &run.Load.Fleet
		acked := count(f.Acked)
		if q == 0 {
			acked = "— (QoS 0)"
		}
		delivered := "—"
		if run.Counted {
			delivered = count(int64(run.deliveredRate(q)))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", run.Name, run.Target,
			count(int64(perSecond(f.WindowSent, f.Window))), count(int64(run.rate(q))), r.ratio(run), delivered,
			acked, count(f.AckedReadings), round(f.Window), round(f.ConnectTime))
	}
	if len(r.Runs) > 0 && r.Runs[len(r.Runs)-1].Counted {
		fmt.Fprintln(w, "\nacked: what the broker acknowledged in the steady window (every device connected). delivered: readings in every record sink per second from the first publish until the sinks had caught up; below acked, the sinks fall behind and the journal absorbs the difference.")
	}

	fmt.Fprint(w, "\n## Delivery (counted in the sinks, not assumed)\n\n")
	fmt.Fprintln(w, "| run | readings expected | broker took in (msgs) | Kafka records | Kafka unique | Kafka lost | InfluxDB count | InfluxDB lost | alerts (sluice / Kafka / InfluxDB) | dead letters | refused | conn. errors | catch-up after load | sink events (sluice's metrics) |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, run := range r.Runs {
		f := &run.Load.Fleet
		kRec, kUni, kLost, iCount, iLost, alerts, dl := "—", "—", "—", "—", "—", "—", "—"
		if run.Counted {
			iCount, iLost = count(run.InfluxCount), count(run.influxLost(q))
			dl = count(run.DeadLetters)
		}
		if run.KafkaCounted {
			kRec, kUni, kLost = count(run.Load.Kafka.Records), count(run.Load.Kafka.Unique), count(run.kafkaLost(q))
			alerts = fmt.Sprintf("%s / %s / %s", count(run.AlertsSluice), count(run.Load.Kafka.Alerts), count(run.Load.InfluxAlerts))
		}
		var written []string
		for _, kind := range []string{"kafka", "influxdb", "mqtt", "file"} {
			if n, ok := run.SinkWritten[kind]; ok {
				written = append(written, kind+" "+count(int64(n)))
			}
		}
		if len(written) == 0 {
			written = []string{"—"}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", run.Name,
			count(run.expected(q)), count(run.BrokerIn), kRec, kUni, kLost, iCount, iLost, alerts, dl,
			count(f.Refused), count(f.Errors), round(run.Drain), strings.Join(written, "; "))
	}

	fmt.Fprint(w, "\n## Latency\n\n")
	fmt.Fprintln(w, "| run | from → to | samples | p50 | p90 | p95 | p99 | max |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|")
	for _, run := range r.Runs {
		if q > 0 {
			latRow(w, run.Name, "publish → PUBACK/PUBCOMP (device)", run.Load.Fleet.AckLatency)
		}
		if run.KafkaCounted {
			latRow(w, run.Name, "publish → record read from Kafka (consumer)", run.Load.KafkaLatency)
		}
		if run.Counted {
			latRow(w, run.Name, "publish → InfluxDB acknowledges the write", run.Load.InfluxLatency)
		}
		if run.Name == "sluice" {
			a := run.SluiceAck
			fmt.Fprintf(w, "| %s | receipt → each sink ack (sluice_ack_latency_seconds, interpolated in its buckets) | | %s | | %s | %s | %s |\n",
				run.Name, a[0], a[1], a[2], a[3])
			for _, name := range slices.Sorted(maps.Keys(run.SinkWrites)) {
				a := run.SinkWrites[name]
				fmt.Fprintf(w, "| %s | sink %s: one batch write, request → acknowledgement (sluice_sink_write_seconds) | | %s | | %s | %s | %s |\n",
					run.Name, name, a[0], a[1], a[2], a[3])
			}
		}
	}

	fmt.Fprint(w, "\n## Resources (process under test, load to catch-up)\n\n")
	fmt.Fprintln(w, "| run | CPU s | cores | CPU µs/msg | peak RSS | load side CPU s | load side peak RSS | influxd CPU s | other processes CPU s |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, run := range r.Runs {
		per := "—"
		if n := run.Load.Fleet.Sent; n > 0 {
			per = fmt.Sprintf("%.1f", float64(run.CPU.Microseconds())/float64(n))
		}
		infl := "—"
		if run.InfluxdCPU > 0 {
			infl = fmt.Sprintf("%.1f", run.InfluxdCPU.Seconds())
		}
		fmt.Fprintf(w, "| %s | %.1f | %.2f | %s | %s | %.1f | %s | %s | %.1f |\n", run.Name, run.CPU.Seconds(),
			run.CPU.Seconds()/max(run.Wall.Seconds(), 1e-9), per, mb(run.PeakRSS),
			run.Load.CPU.Seconds(), mb(run.Load.PeakRSS), infl, run.OthersCPU.Seconds())
	}
	fmt.Fprintln(w, "\nOther processes: CPU the rest of the machine used during the run (/proc/stat less the processes above); high values mean the figures are noisy.")
}

// peer is another process under test: a cluster's node.
type peer struct {
	Name, Roles string
	CPU         time.Duration
	PeakRSS     int64
	pid         int
}

// clusterTable compares one node with a cluster's two (the Kafka hop):
// CPU per acknowledged message of each process, in the same invocation.
func (r *Report) clusterTable(w io.Writer) {
	var one, cl *RunResult
	for _, run := range r.Runs {
		switch run.Name {
		case "sluice":
			one = run
		case "cluster":
			cl = run
		}
	}
	if one == nil || cl == nil {
		return
	}
	per := func(d time.Duration, run *RunResult) float64 {
		if run.Load.Fleet.Acked == 0 {
			return 0
		}
		return float64(d.Microseconds()) / float64(run.Load.Fleet.Acked)
	}
	fmt.Fprint(w, "\n## The Kafka hop: one node against a cluster of three, one role each\n\n")
	fmt.Fprintln(w, "| process | roles | CPU s | CPU µs per acked message | vs one node | peak RSS |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|")
	base := per(one.CPU, one)
	row := func(name, roles string, cpu time.Duration, run *RunResult, rss int64) {
		v := per(cpu, run)
		ratio := "—"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", v/base)
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.1f | %s | %s |\n", name, roles, cpu.Seconds(), v, ratio, mb(rss))
	}
	row("one node, no cluster", "all", one.CPU, one, one.PeakRSS)
	row("cluster: ingest node", "ingest", cl.CPU, cl, cl.PeakRSS)
	cpu, rss := cl.CPU, cl.PeakRSS
	for _, pr := range cl.Peers {
		row("cluster: "+pr.Name+" node", pr.Roles, pr.CPU, cl, pr.PeakRSS)
		cpu, rss = cpu+pr.CPU, rss+pr.PeakRSS
	}
	row("cluster: all nodes", "", cpu, cl, rss)
	fmt.Fprintln(w, "\nThe cluster's nodes talk through Kafka (the stand-in, in the load side's process: its CPU is not in these figures): the ingest node journals and forwards each message, the rules node consumes it and writes its outputs and state in a transaction, and the sinks node reads the outputs back from Kafka.")
}

func latRow(w io.Writer, run, path string, h Hist) {
	if h.N == 0 {
		fmt.Fprintf(w, "| %s | %s | 0 | | | | | |\n", run, path)
		return
	}
	fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", run, path, count(int64(h.N)),
		ms(h.Quantile(0.5)), ms(h.Quantile(0.9)), ms(h.Quantile(0.95)), ms(h.Quantile(0.99)), ms(h.Max))
}

func (r *Report) scaleTable(w io.Writer) {
	fmt.Fprint(w, "\n## Connections\n\n")
	fmt.Fprintln(w, "| run | target | connected | failed | connect time | connects/s | idle RSS | RSS connected | RSS per connection | same, before GC | Go heap+stacks in use per connection | goroutines per connection |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, s := range r.Scale {
		raw := 0.0
		if s.Connected > 0 {
			raw = float64(s.RawRSS-s.IdleRSS) / float64(s.Connected)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %.1f KB | %.1f KB | %.1f KB | %.1f |\n", s.Name, s.Target,
			count(s.Connected), count(s.Load.Fleet.ConnectErr), round(s.Load.Fleet.ConnectTime), count(int64(s.connectRate())),
			mb(s.IdleRSS), mb(s.RSS), s.PerConn/1024, raw/1024, s.HeapPerConn/1024, s.GoroutinesPerConn)
	}
	fmt.Fprintln(w, "\nRSS is measured after a GC that returns freed memory to the system (runtime/debug.FreeOSMemory), idle and connected; \"before GC\" is the RSS connected as it stood. Go heap in use counts allocated spans, including pages never touched (not resident).")
}

// write writes report.md, report.csv and progress.csv to dir.
func (r *Report) write(dir string) error {
	var md bytes.Buffer
	r.markdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "report.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	if err := writeCSV(filepath.Join(dir, "report.csv"), r.csvRows()); err != nil {
		return err
	}
	rows := [][]string{{"run", "t_s", "phase", "connected", "sent_per_s", "acked_per_s", "kafka_per_s", "influx_per_s", "cores", "rss_bytes", "target"}}
	for _, s := range r.samples {
		rows = append(rows, []string{s.Run, ftoa(s.T.Seconds()), s.Phase, itoa(s.Connected), itoa(s.Sent), itoa(s.Acked),
			itoa(s.Kafka), itoa(s.Influx), fmt.Sprintf("%.3f", s.Cores), itoa(s.RSS), s.Extra})
	}
	return writeCSV(filepath.Join(dir, "progress.csv"), rows)
}

func (r *Report) csvRows() [][]string {
	q := r.qos
	head := []string{"run", "target", "devices_connected", "sent", "acked", "sent_readings", "acked_readings", "refused", "errors",
		"window_s", "sent_per_s", "acked_per_s", "ratio_to_baseline", "delivered_readings_per_s", "broker_in", "kafka_records", "kafka_unique", "kafka_lost",
		"influx_count", "influx_lost", "alerts_sluice", "alerts_kafka", "dead_letters", "drain_s",
		"ack_p50_ms", "ack_p95_ms", "ack_p99_ms", "ack_max_ms",
		"kafka_p50_ms", "kafka_p95_ms", "kafka_p99_ms", "kafka_max_ms",
		"influx_p50_ms", "influx_p95_ms", "influx_p99_ms", "influx_max_ms", "influx_p90_ms",
		"sluice_ack_p50_ms", "sluice_ack_p95_ms", "sluice_ack_p99_ms",
		"cpu_s", "cpu_us_per_msg", "peak_rss_bytes", "load_cpu_s", "load_peak_rss_bytes", "influxd_cpu_s", "others_cpu_s", "separate_process",
		"connect_s", "idle_rss_bytes", "rss_bytes", "rss_per_conn_bytes", "heap_per_conn_bytes", "goroutines_per_conn", "connects_per_s"}
	rows := [][]string{head}
	lat := func(h Hist) []string {
		return []string{msf(h.Quantile(0.5)), msf(h.Quantile(0.95)), msf(h.Quantile(0.99)), msf(h.Max)}
	}
	for _, run := range r.Runs {
		f := &run.Load.Fleet
		per := ""
		if f.Sent > 0 {
			per = fmt.Sprintf("%.2f", float64(run.CPU.Microseconds())/float64(f.Sent))
		}
		row := []string{run.Name, run.Target, itoa(f.Connected), itoa(f.Sent), itoa(f.Acked), itoa(f.SentReadings), itoa(f.AckedReadings),
			itoa(f.Refused), itoa(f.Errors), ftoa(f.Window.Seconds()), ftoa(perSecond(f.WindowSent, f.Window)), ftoa(run.rate(q)),
			strings.Trim(r.ratio(run), "—"), ftoa(run.deliveredRate(q)), itoa(run.BrokerIn)}
		if run.Counted {
			row = append(row, itoa(run.Load.Kafka.Records), itoa(run.Load.Kafka.Unique), itoa(run.kafkaLost(q)),
				itoa(run.InfluxCount), itoa(run.influxLost(q)), itoa(run.AlertsSluice), itoa(run.Load.Kafka.Alerts), itoa(run.DeadLetters))
		} else {
			row = append(row, "", "", "", "", "", "", "", "")
		}
		row = append(row, ftoa(run.Drain.Seconds()))
		row = append(row, lat(f.AckLatency)...)
		row = append(row, lat(run.Load.KafkaLatency)...)
		row = append(row, lat(run.Load.InfluxLatency)...)
		row = append(row, msf(run.Load.InfluxLatency.Quantile(0.9)))
		row = append(row, msf(run.SluiceAck[0].D), msf(run.SluiceAck[1].D), msf(run.SluiceAck[2].D))
		row = append(row, ftoa(run.CPU.Seconds()), per, itoa(run.PeakRSS), ftoa(run.Load.CPU.Seconds()), itoa(run.Load.PeakRSS),
			ftoa(run.InfluxdCPU.Seconds()), ftoa(run.OthersCPU.Seconds()), strconv.FormatBool(r.Separate))
		row = append(row, "", "", "", "", "", "", "")
		rows = append(rows, row)
	}
	for _, s := range r.Scale {
		f := &s.Load.Fleet
		row := make([]string, len(head))
		row[0], row[1], row[2], row[3], row[4] = s.Name, s.Target, itoa(s.Connected), itoa(f.Sent), itoa(f.Acked)
		row[7], row[8] = itoa(f.Refused), itoa(f.Errors)
		row[len(head)-8] = strconv.FormatBool(r.Separate)
		tail := []string{ftoa(f.ConnectTime.Seconds()), itoa(s.IdleRSS), itoa(s.RSS), ftoa(s.PerConn), ftoa(s.HeapPerConn),
			ftoa(s.GoroutinesPerConn), ftoa(s.connectRate())}
		copy(row[len(head)-7:], tail)
		rows = append(rows, row)
	}
	return rows
}

func writeCSV(path string, rows [][]string) error {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.WriteAll(rows); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// count formats n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var parts []string
	for len(s) > 3 {
		parts = append([]string{s[len(s)-3:]}, parts...)
		s = s[:len(s)-3]
	}
	parts = append([]string{s}, parts...)
	out := strings.Join(parts, ",")
	if neg {
		out = "-" + out
	}
	return out
}

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func msf(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func round(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }
