package auth

import (
	"net/netip"
	"sync"
	"time"
)

// Backoff slows password guessing. It counts failed logins per client
// address and per user name, and says how long the refusal of the next
// failure should wait: nothing for the first After failures of an address
// or a user, then Initial, doubling with each further failure up to Max.
// A key's failures are forgotten Forget after its last one. A login that
// succeeds is never delayed, whatever its address or user has done: the
// delay is the failing client's only (its refusal waits; its connection
// holds nothing else).
//
// Only users of the password file are counted by name, so the table of
// names is bounded by the file; an unknown name counts against its address
// only. Addresses are bounded by maxAddresses: past it, forgotten entries
// go first, then any. An IPv6 address counts by its /64, which one host
// usually holds whole.
type Backoff struct {
	cfg BackoffConfig
	now func() time.Time

	mu    sync.Mutex
	addrs map[netip.Prefix]*failures
	users map[string]*failures
}

// BackoffConfig is the schedule; zero values are the defaults.
type BackoffConfig struct {
	After   int           // failures before refusals are delayed (default 3)
	Initial time.Duration // the first delay (default 1s), doubled with each failure after
	Max     time.Duration // the longest delay (default 10s)
	Forget  time.Duration // failures are forgotten this long after the last (default 10m)
}

// Backoff defaults.
const (
	DefaultBackoffAfter   = 3
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = 10 * time.Second
	DefaultBackoffForget  = 10 * time.Minute
)

// maxAddresses bounds the addresses tracked (about 100 bytes each).
const maxAddresses = 100_000

type failures struct {
	n    int
	last time.Time
}

// SetDefaults fills in the zero values.
func (c *BackoffConfig) SetDefaults() {
	if c.After == 0 {
		c.After = DefaultBackoffAfter
	}
	if c.Initial == 0 {
		c.Initial = DefaultBackoffInitial
	}
	if c.Max == 0 {
		c.Max = max(DefaultBackoffMax, c.Initial)
	}
	if c.Forget == 0 {
		c.Forget = DefaultBackoffForget
	}
}

// NewBackoff returns a Backoff with cfg's schedule (defaults filled in),
// reading the time from now (time.Now when nil).
func NewBackoff(cfg BackoffConfig, now func() time.Time) *Backoff {
	cfg.SetDefaults()
	if now == nil {
		now = time.Now
	}
	return &Backoff{cfg: cfg, now: now, addrs: map[netip.Prefix]*failures{}, users: map[string]*failures{}}
}

// Failed records a failed login from addr (host:port or host; unparsable,
// it is not counted) as user (counted by name when known is true: a user
// of the password file) and returns how long its refusal should wait.
func (b *Backoff) Failed(addr, user string, known bool) time.Duration {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	if p, ok := addrKey(addr); ok {
		f := b.addrs[p]
		if f == nil {
			b.makeRoom(now)
			f = &failures{}
			b.addrs[p] = f
		}
		n = max(n, b.add(f, now))
	}
	if known && user != "" {
		f := b.users[user]
		if f == nil {
			f = &failures{}
			b.users[user] = f
		}
		n = max(n, b.add(f, now))
	}
	return b.delay(n)
}

// add counts a failure and returns the number before it (of those not
// forgotten).
func (b *Backoff) add(f *failures, now time.Time) int {
	if now.Sub(f.last) > b.cfg.Forget {
		f.n = 0
	}
	before := f.n
	f.n++
	f.last = now
	return before
}

// delay is the wait for a failure that follows n others.
func (b *Backoff) delay(n int) time.Duration {
	if n < b.cfg.After {
		return 0
	}
	d := b.cfg.Initial
	for i := b.cfg.After; i < n && d < b.cfg.Max; i++ {
		d *= 2
	}
	return min(d, b.cfg.Max)
}

// makeRoom drops forgotten addresses when the table is full, and any one
// when none is.
func (b *Backoff) makeRoom(now time.Time) {
	if len(b.addrs) < maxAddresses {
		return
	}
	for p, f := range b.addrs {
		if now.Sub(f.last) > b.cfg.Forget {
			delete(b.addrs, p)
		}
	}
	for p := range b.addrs {
		if len(b.addrs) < maxAddresses {
			break
		}
		delete(b.addrs, p)
	}
	for u, f := range b.users {
		if now.Sub(f.last) > b.cfg.Forget {
			delete(b.users, u)
		}
	}
}

// addrKey is the key an address counts under: the IP (an IPv4 address
// mapped into IPv6 as IPv4), or an IPv6 address's /64.
func addrKey(addr string) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(addr)
	ip := ap.Addr()
	if err != nil {
		if ip, err = netip.ParseAddr(addr); err != nil {
			return netip.Prefix{}, false
		}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}
