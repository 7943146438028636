package coap

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	piondtls "github.com/pion/dtls/v3"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
)

// cipherSuites are offered to DTLS clients; pion keeps those that fit the
// configured credentials (PSK suites with psk, certificate suites with a
// certificate). The first of each kind is the one RFC 7252 9.1.3 makes
// mandatory for CoAP devices.
var cipherSuites = []piondtls.CipherSuiteID{
	piondtls.TLS_PSK_WITH_AES_128_CCM_8,
	piondtls.TLS_PSK_WITH_AES_128_CCM,
	piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	piondtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// load reads the certificate files and returns the DTLS server options.
// Errors name the files, never a key.
func (d *DTLSConfig) load() (coapnet.DTLSServerOptions, error) {
	opts := []piondtls.ServerOption{piondtls.WithCipherSuites(cipherSuites...)}
	if len(d.PSK) > 0 {
		keys := make(map[string][]byte, len(d.PSK))
		for _, k := range d.PSK {
			keys[k.Identity] = []byte(k.Key.Reveal())
		}
		// The callback gets the identity the client sent; an unknown one
		// fails the handshake.
		opts = append(opts, piondtls.WithPSK(func(id []byte) ([]byte, error) {
			key, ok := keys[string(id)]
			if !ok {
				return nil, fmt.Errorf("unknown PSK identity %q", id)
			}
			return key, nil
		}), piondtls.WithPSKIdentityHint([]byte("sluice")))
	}
	if d.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(d.CertFile, d.KeyFile)
		if err != nil {
			return coapnet.DTLSServerOptions{}, fmt.Errorf("cert_file %s, key_file %s: %w", d.CertFile, d.KeyFile, err)
		}
		opts = append(opts, piondtls.WithCertificates(cert))
	}
	if d.ClientCAFile != "" {
		pem, err := os.ReadFile(d.ClientCAFile)
		if err != nil {
			return coapnet.DTLSServerOptions{}, fmt.Errorf("client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return coapnet.DTLSServerOptions{}, fmt.Errorf("client_ca_file %s: no PEM certificate in it", d.ClientCAFile)
		}
		opts = append(opts, piondtls.WithClientCAs(pool), piondtls.WithClientAuth(piondtls.RequireAndVerifyClientCert))
	}
	return coapnet.NewDTLSServerOptions(opts...), nil
}

// peerIdentity is what a DTLS peer authenticated as: the PSK identity it
// sent, or the common name of its verified certificate. "" for plain UDP
// and for DTLS peers without either.
func peerIdentity(c net.Conn) string {
	dc, ok := c.(*piondtls.Conn)
	if !ok {
		return ""
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return ""
	}
	if len(st.IdentityHint) > 0 {
		return string(st.IdentityHint)
	}
	if len(st.PeerCertificates) > 0 {
		if cert, err := x509.ParseCertificate(st.PeerCertificates[0]); err == nil {
			return cert.Subject.CommonName
		}
	}
	return ""
}
