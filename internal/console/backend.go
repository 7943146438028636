package console

import (
	"context"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

// Backend is what the console asks of the running service
// (pipelines.Service implements it).
type Backend interface {
	// Pipelines describes the pipelines, in the config's order.
	Pipelines() []PipelineInfo
	// Rules returns the rule set running in a pipeline (nil if unknown).
	Rules(pipeline string) *rules.Set
	// DecodeLimits are the limits payloads are decoded within.
	DecodeLimits() rules.Limits
	// Messages calls each with the messages of a pipeline's journal
	// received at or after since, oldest first, up to the last one there
	// when the call began. It returns the time of the oldest record the
	// journal held (zero if none): where a look back can start.
	Messages(ctx context.Context, pipeline string, since time.Time, each func(seq uint64, msg *sluice.Message) error) (oldest time.Time, err error)
	// Recent returns the last n messages of a pipeline's journal whose
	// topic filter matches (nil: any), oldest first.
	Recent(ctx context.Context, pipeline string, filter *rules.Filter, n int) ([]*sluice.Message, error)
	// Resend hands events derived from msg to a pipeline's sinks, as the
	// rules' own output (a dead letter replayed).
	Resend(ctx context.Context, pipeline string, msg *sluice.Message, events []sluice.Event) error
	// ReloadRules recompiles every pipeline's rule files and swaps them in
	// (or leaves the running rules and says why not).
	ReloadRules() error
}

// PipelineInfo describes a pipeline.
type PipelineInfo struct {
	Name   string
	Topics []string
	// Retention is how long the journal keeps messages for a replay.
	Retention time.Duration
	// Journal is where the journal is: "disk", "memory" (durability none:
	// it holds what the sinks have not written, and no more than its
	// bound) or "" (none on this node).
	Journal string
}
