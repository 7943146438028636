package pipelines

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/console"
	"github.com/sluicehq/sluice/internal/journal"
	"github.com/sluicehq/sluice/rules"
)

// What the operator's console asks of a running service (console.Backend):
// the pipelines, their rules, and looks into their journals.

var _ console.Backend = (*Service)(nil)

func (s *Service) pipeline(name string) (*pipeline, error) {
	for _, p := range s.pipelines {
		if p.name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no pipeline %q", name)
}

// Pipelines describes the pipelines, in the config's order.
func (s *Service) Pipelines() []console.PipelineInfo {
	out := make([]console.PipelineInfo, len(s.pipelines))
	for i, p := range s.pipelines {
		pc := &s.cfg.Pipelines[i]
		out[i] = console.PipelineInfo{Name: p.name, Topics: pc.Topics, Retention: pc.Journal.Retention, Journal: "disk"}
		switch {
		case s.cfg.Cluster != nil && !s.cfg.Cluster.has(roleIngest):
			out[i].Journal = ""
		case pc.Durability == "none":
			out[i].Journal = "memory"
		}
	}
	return out
}

// DecodeLimits are the limits payloads are decoded within.
func (s *Service) DecodeLimits() rules.Limits {
	return rules.Limits{MaxSize: s.cfg.Decode.MaxSize, MaxRatio: s.cfg.Decode.MaxRatio}
}

// Messages calls each with the messages of a pipeline's journal received at
// or after since, oldest first, up to the last record there when the call
// began, and returns the time of the oldest record the journal held. It
// reads beside the cursors, holding nothing back (journal.Peek).
func (s *Service) Messages(ctx context.Context, pipeline string, since time.Time, each func(seq uint64, msg *sluice.Message) error) (time.Time, error) {
	p, err := s.pipeline(pipeline)
	if err != nil {
		return time.Time{}, err
	}
	var oldest time.Time
	err = p.peek(ctx, 0, func(seq uint64, at time.Time, msg *sluice.Message) error {
		if oldest.IsZero() {
			oldest = at
		}
		if msg == nil || msg.Received.Before(since) {
			return nil
		}
		return each(seq, msg)
	})
	return oldest, err
}

// Recent returns the last n messages of a pipeline's journal whose topic
// filter matches (nil: any), oldest first. It reads the journal's last
// records, and further back until it has n or has read everything held.
func (s *Service) Recent(ctx context.Context, pipeline string, filter *rules.Filter, n int) ([]*sluice.Message, error) {
	p, err := s.pipeline(pipeline)
	if err != nil {
		return nil, err
	}
	const most = 1 << 21 // records read at most
	st := p.journal.Stats()
	for span := uint64(max(8*n, 4096)); ; span *= 4 {
		from := st.First
		if st.Last > span && st.Last-span > from {
			from = st.Last - span
		}
		var ring []*sluice.Message
		err := p.peek(ctx, from, func(seq uint64, at time.Time, msg *sluice.Message) error {
			if msg == nil || seq > st.Last || (filter != nil && !filter.Match(msg.Topic, nil)) {
				return nil
			}
			if len(ring) == n {
				ring = append(ring[:0], ring[1:]...)
			}
			ring = append(ring, msg)
			return nil
		})
		if err != nil || len(ring) == n || from <= st.First || span >= most {
			return ring, err
		}
	}
}

// peek reads the journal's records from seq from (0: the first held) up to
// the last one there now, and calls each with the messages (nil for other
// records).
func (p *pipeline) peek(ctx context.Context, from uint64, each func(seq uint64, at time.Time, msg *sluice.Message) error) error {
	st := p.journal.Stats()
	last := st.Last
	if st.First == 0 || from > last {
		return nil // nothing held, or nothing from there
	}
	r := p.journal.Peek()
	defer r.Close()
	if from > 0 {
		r.Rewind(from - 1)
	}
	for {
		e, err := r.Next(ctx)
		switch {
		case errors.Is(err, journal.ErrClosed):
			return errors.New("sluice is stopping")
		case err != nil:
			return err
		case e.Seq > last:
			return nil
		}
		var msg *sluice.Message
		if e.Kind == kindMessage {
			if msg, _ = e.Value.(*sluice.Message); msg == nil {
				if msg, err = sluice.DecodeMessage(e.Data); err != nil {
					msg = nil // unreadable: the rules skipped it too
				}
			}
		}
		if err := each(e.Seq, e.Time, msg); err != nil {
			return err
		}
		if e.Seq >= last {
			return nil
		}
	}
}

// Resend hands events derived from msg to a pipeline's sinks, as the rules'
// own output (a dead letter replayed after a fix), and returns once they
// are in the journal as durably as the pipeline's messages.
func (s *Service) Resend(ctx context.Context, pipeline string, msg *sluice.Message, events []sluice.Event) error {
	p, err := s.pipeline(pipeline)
	if err != nil {
		return err
	}
	if p.cluster != nil {
		return errors.New("not in a cluster: replay a dead letter on a single-node sluice, or publish its message again")
	}
	if seq := p.record(msg, events); seq > 0 {
		return p.journal.WaitDurable(ctx, seq)
	}
	return nil
}
