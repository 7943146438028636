# sluice — the two commands that matter:
#   make demo   run the demo: broker, rules, sinks and simulated devices
#   make test   run the whole test suite
# Both install what they need (the influxd used by tests and the demo is
# built from source into .tools/bin the first time, about a minute).

GO      ?= go
TOOLS   := $(CURDIR)/.tools/bin
INFLUXD := $(TOOLS)/influxd
SLUICE  := $(CURDIR)/bin/sluice
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
export SLUICE_INFLUXD := $(INFLUXD)

FUZZTIME ?= 5s

.PHONY: all build tools demo cluster-demo test vet fuzz chaos bench generate clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(SLUICE) ./cmd/sluice

# InfluxDB 1.8.10 is the newest InfluxDB that builds here without a Rust
# toolchain; its v2 write/query API and Flux serve the tests and the demo.
tools: $(INFLUXD)
$(INFLUXD):
	@echo "Building influxd 1.8.10 into $(TOOLS) (first time only) ..."
	GOBIN=$(TOOLS) $(GO) install github.com/influxdata/influxdb/cmd/influxd@v1.8.10

demo: build tools
	$(SLUICE) demo

# The demo as a cluster: three sluice nodes on the Kafka stand-in, sharing
# the partitions; a node is stopped and started again every minute.
cluster-demo: build tools
	$(SLUICE) demo -nodes 3

vet:
	$(GO) vet ./...

# The whole suite, with the race detector, against the real influxd; go.mod
# and go.sum must be tidy, and the example rules' own tests pass, first; then
# every fuzz target for FUZZTIME.
test: tools vet
	$(GO) mod tidy -diff
	$(GO) run ./cmd/sluice rules test examples/rules
	$(GO) test -race -count=1 -timeout 15m ./...
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# Every fuzz target for FUZZTIME each: make fuzz FUZZTIME=60s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# The fault-injection suite at full length: longer outages, more messages.
chaos: tools
	SLUICE_CHAOS=long $(GO) test -count=1 -timeout 30m -v ./internal/chaos

# Screenshots of each view of the console for docs/console.md, taken by its
# browser test (headless chromium) against a sluice with a minute of traffic.
console-shots:
	SLUICE_CONSOLE_SHOTS=$(CURDIR)/docs/img $(GO) test -count=1 -run TestConsoleInABrowser ./cmd/sluice

# Regenerate the Grafana dashboards' JSON from their Go code (a test fails
# when the committed JSON differs).
generate:
	$(GO) generate ./dashboards

# The full benchmark (docs/performance.md), each part against the bare
# broker and sluice in the same run: QoS 1 as fast as acknowledged for 60s
# (with a CPU profile of sluice), the same at 40,000 msg/s offered for 5
# minutes (does sluice sustain it: do the sinks keep up, is the backlog flat?), at 20,000 msg/s for latency,
# the simplest job (one rule, InfluxDB) as fast as acknowledged and at
# 20,000 msg/s, 19,000 idle connections, 200,000 series that appear once
# and expire (memory), and one node against a cluster of three (ingest,
# rules, sinks) at 10,000 msg/s (the cost of the Kafka hop). Reports in reports/bench/.
BENCH_OUT   ?= $(CURDIR)/reports/bench
BENCH_FLAGS ?=
bench: build tools
	$(SLUICE) bench $(BENCH_FLAGS) -out $(BENCH_OUT)/throughput -cpuprofile $(BENCH_OUT)/throughput/cpu.prof
	$(SLUICE) bench -duration 5m $(BENCH_FLAGS) -rate 40000 -out $(BENCH_OUT)/sustained
	$(SLUICE) bench $(BENCH_FLAGS) -rate 20000 -out $(BENCH_OUT)/latency
	$(SLUICE) bench $(BENCH_FLAGS) -job influx -out $(BENCH_OUT)/influx
	$(SLUICE) bench $(BENCH_FLAGS) -job influx -rate 20000 -out $(BENCH_OUT)/influx-latency
	$(SLUICE) bench $(BENCH_FLAGS) -scale -devices 19000 -out $(BENCH_OUT)/connections
	$(SLUICE) bench $(BENCH_FLAGS) -scale -series 200000 -out $(BENCH_OUT)/series
	$(SLUICE) bench $(BENCH_FLAGS) -cluster -baseline=false -rate 10000 -duration 30s -out $(BENCH_OUT)/cluster

clean:
	rm -rf bin .demo
