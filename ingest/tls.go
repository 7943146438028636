package ingest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// tlsFiles serves a listener's TLS configuration from its files, and
// re-reads them when they change: a renewed certificate (or CA bundle)
// applies from the next handshake on, without a restart and without
// touching connected clients. Files are looked at (stat) at most once per
// second. A renewal that does not load (a key that does not match, half a
// file) is logged and the previous certificate stays.
type tlsFiles struct {
	cfg        TLSConfig
	listener   string
	log        *slog.Logger
	onLoad     func(leaf *x509.Certificate) // reports the certificate in use
	nextProtos []string                     // offered by ALPN (HTTP/2 for HTTP listeners)

	mu      sync.Mutex
	checked time.Time
	stamps  [3]fileStamp
	current *tls.Config
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// modernCiphers are the TLS 1.2 suites offered: forward secret (ECDHE)
// and authenticated encryption only. TLS 1.3's suites are all of that
// kind, and Go does not let them be configured.
var modernCiphers = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// TLSFiles is a TLS listener's configuration served from its files and
// reloaded when they change, for ingest paths beside MQTT (HTTP): the same
// versions, cipher suites, client certificates and renewal as the broker's
// listeners.
type TLSFiles struct{ f *tlsFiles }

// NewTLSFiles loads a listener's TLS files; onLoad (may be nil) is told
// each certificate loaded, nextProtos are offered by ALPN.
func NewTLSFiles(listener string, cfg TLSConfig, log *slog.Logger, onLoad func(*x509.Certificate), nextProtos ...string) (*TLSFiles, error) {
	f, err := newTLSFiles(listener, cfg, log, onLoad)
	if err != nil {
		return nil, err
	}
	f.nextProtos = nextProtos
	f.current.NextProtos = nextProtos
	return &TLSFiles{f}, nil
}

// ServerConfig is the tls.Config to listen with: each handshake gets the
// configuration of the files as they are then.
func (t *TLSFiles) ServerConfig() *tls.Config {
	c := t.f.serverConfig()
	c.NextProtos = t.f.nextProtos
	return c
}

// CertIdentity is the identity a verified client certificate carries, as
// a listener's identity setting (cn, san_dns, san_email, san_uri) picks it;
// "" without a verified client certificate.
func CertIdentity(state *tls.ConnectionState, field string) (string, error) {
	return certIdentity(state, field)
}

func newTLSFiles(listener string, cfg TLSConfig, log *slog.Logger, onLoad func(*x509.Certificate)) (*tlsFiles, error) {
	f := &tlsFiles{cfg: cfg, listener: listener, log: log, onLoad: onLoad}
	stamps := f.stat()
	c, err := f.load()
	if err != nil {
		return nil, err
	}
	f.current, f.stamps, f.checked = c, stamps, time.Now()
	return f, nil
}

// serverConfig is the listener's tls.Config: each handshake gets the
// configuration of the files as they are now.
func (f *tlsFiles) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.config(), nil
		},
	}
}

func (f *tlsFiles) config() *tls.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) < time.Second {
		return f.current
	}
	f.checked = time.Now()
	stamps := f.stat()
	if stamps == f.stamps {
		return f.current
	}
	c, err := f.load()
	if err != nil {
		// Keep serving the old certificate; try again when the files
		// change again.
		f.log.Error("TLS files changed but do not load; still using the previous ones", "listener", f.listener, "error", err)
		f.stamps = stamps
		return f.current
	}
	f.log.Info("TLS files reloaded", "listener", f.listener)
	f.current, f.stamps = c, stamps
	return c
}

func (f *tlsFiles) stat() [3]fileStamp {
	var s [3]fileStamp
	for i, name := range []string{f.cfg.CertFile, f.cfg.KeyFile, f.cfg.ClientCAFile} {
		if name == "" {
			continue
		}
		if st, err := os.Stat(name); err == nil {
			s[i] = fileStamp{mod: st.ModTime(), size: st.Size()}
		}
	}
	return s
}

// load reads the files into a complete server configuration.
func (f *tlsFiles) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.cfg.CertFile, f.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("listener %q: certificate %s, key %s: %w", f.listener, f.cfg.CertFile, f.cfg.KeyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	if leaf != nil {
		if left := time.Until(leaf.NotAfter); left < 0 {
			f.log.Error("the listener's certificate has expired; clients will refuse it", "listener", f.listener, "file", f.cfg.CertFile, "not_after", leaf.NotAfter)
		} else if left < 14*24*time.Hour {
			f.log.Warn("the listener's certificate expires soon", "listener", f.listener, "file", f.cfg.CertFile, "not_after", leaf.NotAfter)
		}
		if f.onLoad != nil {
			f.onLoad(leaf)
		}
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: modernCiphers,
		Certificates: []tls.Certificate{cert},
		NextProtos:   f.nextProtos,
	}
	if f.cfg.MinVersion == "1.3" {
		c.MinVersion = tls.VersionTLS13
	}
	if f.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(f.cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("listener %q: client CA bundle: %w", f.listener, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("listener %q: client CA bundle %s holds no PEM certificate", f.listener, f.cfg.ClientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
		if f.cfg.ClientCerts == "optional" {
			c.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	return c, nil
}

// certIdentity is the identity a verified client certificate carries, as
// the listener's identity setting picks it.
func certIdentity(state *tls.ConnectionState, field string) (string, error) {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", nil // no verified client certificate
	}
	cert := state.VerifiedChains[0][0]
	var id string
	switch field {
	case "cn":
		id = cert.Subject.CommonName
	case "san_dns":
		if len(cert.DNSNames) > 0 {
			id = cert.DNSNames[0]
		}
	case "san_email":
		if len(cert.EmailAddresses) > 0 {
			id = cert.EmailAddresses[0]
		}
	case "san_uri":
		if len(cert.URIs) > 0 {
			id = cert.URIs[0].String()
		}
	}
	if id == "" {
		return "", errors.New("the client certificate has no " + field + " to use as its identity")
	}
	return id, nil
}
