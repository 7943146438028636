package rules

import (
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules/decode"
)

// Simulation runs a Set over messages on a simulated clock, as a pipeline's
// worker runs it on the wall clock: time comes from each message's receive
// time, and Tick runs at every whole second in between (absent series,
// re-notifications, evictions). It is how rules are tried over messages
// without a running pipeline: the console's playground, sluice replay.
type Simulation struct {
	ev   *Evaluator
	tick time.Time // the next tick; zero before the first message
	out  []sluice.Event
}

// Simulate returns a simulation of s starting with no state.
func (s *Set) Simulate(limits Limits) *Simulation {
	return &Simulation{ev: s.NewEvaluator(nil, limits)}
}

// Eval advances the clock to msg's receive time, running the ticks on the
// way, then evaluates msg. It returns the ticks' alerts and then what msg
// produced, both valid until the next call.
func (sim *Simulation) Eval(msg *sluice.Message) (ticks, out []sluice.Event, o Outcome) {
	if sim.tick.IsZero() {
		sim.tick = msg.Received.Truncate(time.Second).Add(time.Second)
	}
	sim.out = sim.advance(msg.Received, sim.out[:0])
	n := len(sim.out)
	sim.out, o = sim.ev.Eval(msg, sim.out)
	return sim.out[:n:n], sim.out[n:], o
}

// Until advances the clock to end, running the ticks on the way, and
// returns their alerts (valid until the next call).
func (sim *Simulation) Until(end time.Time) []sluice.Event {
	if sim.tick.IsZero() {
		return nil
	}
	sim.out = sim.advance(end, sim.out[:0])
	return sim.out
}

func (sim *Simulation) advance(to time.Time, out []sluice.Event) []sluice.Event {
	for !sim.tick.After(to) {
		out = sim.ev.Tick(sim.tick, out)
		sim.tick = sim.tick.Add(time.Second)
	}
	return out
}

// Firing lists the series firing at the simulation's clock (see
// Evaluator.Firing).
func (sim *Simulation) Firing() []*sluice.Alert { return sim.ev.Firing(nil) }

// Matching lists the rules whose topic filter matches topic, in evaluation
// order (whether their where passes is another matter).
func (s *Set) Matching(topic string) []string {
	var names []string
	for _, r := range s.rules {
		if r.filter < 0 || s.filters[r.filter].Match(topic, nil) {
			names = append(names, r.name)
		}
	}
	return names
}

// Decode decodes msg's payload as the first rule matching its topic does,
// and returns the rule's name and the readings' fields (nil, with no error,
// when no rule matches). It is for showing a payload to a person; the
// evaluator decodes on its own.
func (s *Set) Decode(msg *sluice.Message, limits Limits) (string, [][]sluice.Field, error) {
	for _, r := range s.rules {
		if r.filter >= 0 && !s.filters[r.filter].Match(msg.Topic, nil) {
			continue
		}
		readings, err := decode.NewDecoder(limits).Decode(s.chains[r.chain], msg.Payload,
			decode.Options{ContentType: msg.ContentType, Split: s.splits[r.chain]})
		if err != nil {
			return r.name, nil, err
		}
		out := make([][]sluice.Field, len(readings))
		for i, reading := range readings {
			fields := make([]sluice.Field, len(reading))
			for k, f := range reading {
				fields[k] = sluice.Field{Name: f.Name, Value: f.Value}
			}
			out[i] = fields
		}
		return r.name, out, nil
	}
	return "", nil, nil
}

// Only returns a set of the named rule alone (nil if s has no such rule):
// to evaluate one rule again without the others (a dead letter of that rule
// replayed after a fix).
func (s *Set) Only(name string) *Set {
	for _, r := range s.rules {
		if r.name == name {
			only := *s
			only.rules = []*rule{r}
			return &only
		}
	}
	return nil
}
