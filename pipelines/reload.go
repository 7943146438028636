package pipelines

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// ReloadRules recompiles the rules of every pipeline and, when all of them
// compile, swaps them in: each worker moves to the new rules between two
// messages, keeping the state (windows, alert episodes) of every rule whose
// definition did not change. When any rule file has an error, nothing
// changes, and the error (file:line:col) is returned and logged. No
// connection is dropped and no message is lost or evaluated twice.
func (s *Service) ReloadRules() error {
	sets, err := s.cfg.CompileRules()
	if err != nil {
		s.metrics.RuleReloads.WithLabelValues("failure").Inc()
		s.log.Error("rules not reloaded; the running rules stay", "error", err)
		return err
	}
	for i, p := range s.pipelines {
		part, _, err := s.cfg.Partition(&s.cfg.Pipelines[i], sets[p.name])
		if err == nil && !part.Equal(p.part) {
			err = fmt.Errorf("pipeline %q: the rules now partition by %s, not %s: restart sluice to apply them "+
				"(the running rules' state is spread over the workers by the old key)", p.name, part, p.part)
		}
		if err != nil {
			s.metrics.RuleReloads.WithLabelValues("failure").Inc()
			s.log.Error("rules not reloaded; the running rules stay", "error", err)
			return err
		}
	}
	n := 0
	for _, p := range s.pipelines {
		set := sets[p.name]
		p.set.Store(set)
		n += len(set.Rules())
	}
	s.metrics.RuleReloads.WithLabelValues("success").Inc()
	s.log.Info("rules reloaded", "rules", n)
	return nil
}

// Reload reloads the rules and the broker's password and ACL files (SIGHUP).
// Each applies on its own: a rule file with an error does not keep a
// corrected ACL file out, and the other way round.
func (s *Service) Reload() error {
	return errors.Join(s.ReloadRules(), s.broker.ReloadAuth())
}

// watchFiles reloads the rules when a rule file changes, and the password
// and ACL files when they change, until ctx ends. Folders are watched
// rather than files: editors save by replacing a file, and a new file in a
// rule folder is a new rule file. Bursts of events (a save is several) are
// coalesced.
func (s *Service) watchFiles(ctx context.Context, watchRules bool) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch rule, password and ACL files; reload with SIGHUP", "error", err)
		return
	}
	defer w.Close()
	dirs := map[string]bool{}
	for i := range s.cfg.Pipelines {
		if !watchRules {
			break
		}
		for _, p := range s.cfg.RulePaths(&s.cfg.Pipelines[i]) {
			dir := p
			if st, err := os.Stat(p); err != nil || !st.IsDir() {
				dir = filepath.Dir(p)
			}
			dirs[filepath.Clean(dir)] = true
		}
	}
	authFiles := map[string]bool{}
	for _, f := range s.cfg.Broker.Files() {
		authFiles[filepath.Clean(f)] = true
		dirs[filepath.Dir(filepath.Clean(f))] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			s.log.Warn("cannot watch a folder; reload with SIGHUP", "folder", d, "error", err)
		}
	}
	const settle = 300 * time.Millisecond
	rulesTimer, authTimer := time.NewTimer(time.Hour), time.NewTimer(time.Hour)
	rulesTimer.Stop()
	authTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			switch {
			case ev.Op == fsnotify.Chmod:
			case authFiles[filepath.Clean(ev.Name)]:
				authTimer.Reset(settle)
			case watchRules && isRuleFileEvent(ev):
				rulesTimer.Reset(settle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("file watcher", "error", err)
		case <-rulesTimer.C:
			s.ReloadRules()
		case <-authTimer.C:
			s.broker.ReloadAuth()
		}
	}
}

func isRuleFileEvent(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Base(ev.Name)
	return (strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) && !strings.HasPrefix(name, ".")
}
