package secret

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/sluicehq/sluice/internal/conf"
)

// TLS configures the client side of a TLS connection: which servers to
// trust, and the certificate to present for mutual TLS. Its files are read
// by Load, when the connection is set up, not when the config is validated.
type TLS struct {
	// CAFile is a PEM file of the certificates that sign the servers'
	// certificates. Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's PEM certificate (with its
	// chain) and private key, for servers that require mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the server's certificate must carry.
	// Default: the host the client connects to.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate. For tests only:
	// the connection is encrypted but the server is not authenticated.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Validate checks the settings without reading the files.
func (t *TLS) Validate() error {
	var p conf.Problems
	if t.CertFile != "" && t.KeyFile == "" {
		p.Addf("cert_file", "needs key_file: the client certificate's private key")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		p.Addf("key_file", "needs cert_file: the client certificate")
	}
	return p.Err()
}

// Load reads the files and returns the client configuration: TLS 1.2 or
// later, the CA file's certificates (or the system's) as roots, and the
// client certificate when one is set. Errors name the files, never their
// contents.
func (t *TLS) Load() (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: ca_file %s: no PEM certificate in it", t.CAFile)
		}
	}
	if t.CertFile != "" || t.KeyFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, errors.New("tls: cert_file and key_file go together")
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: cert_file %s, key_file %s: %w", t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// IsTLSFailure reports whether err is a failed TLS handshake: a server
// certificate that does not verify, a client certificate the server refused
// (an alert from the server), or a server that does not speak TLS.
func IsTLSFailure(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verification     *tls.CertificateVerificationError
		alert            tls.AlertError
		header           tls.RecordHeaderError
		op               *net.OpError
	)
	return errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verification) || errors.As(err, &alert) || errors.As(err, &header) ||
		// crypto/tls reports an alert from the server this way.
		(errors.As(err, &op) && op.Op == "remote error")
}
