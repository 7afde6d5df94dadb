package config

import (
	"crypto/tls"
	"crypto/x509"
	"net"
)

// tlsConfig verifies the server's certificate against roots (nil: the system
// roots) and the host name of addr, with TLS 1.2 as the floor.
func tlsConfig(addr string, roots *x509.CertPool) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, RootCAs: roots}
}
