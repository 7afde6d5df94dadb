package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// TLSFiles are a test CA and a server certificate it signed for 127.0.0.1
// and localhost, written as PEM files.
type TLSFiles struct {
	CA, Cert, Key string
}

// WriteTLSFiles makes a throwaway CA and a server certificate in dir.
func WriteTLSFiles(dir string) (TLSFiles, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return TLSFiles{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redquota test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return TLSFiles{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return TLSFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return TLSFiles{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return TLSFiles{}, err
	}
	f := TLSFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server.key")}
	write := func(path, typ string, b []byte) error {
		return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600)
	}
	if err := write(f.CA, "CERTIFICATE", caDER); err != nil {
		return f, err
	}
	if err := write(f.Cert, "CERTIFICATE", der); err != nil {
		return f, err
	}
	return f, write(f.Key, "EC PRIVATE KEY", keyDER)
}

// StartTLSServer starts a redis-server that accepts TLS only, on a free
// port, with a test CA it made; clients need not present certificates.
func StartTLSServer(dir string, extra ...string) (*Server, TLSFiles, int, error) {
	files, err := WriteTLSFiles(dir)
	if err != nil {
		return nil, files, 0, err
	}
	tlsPort, err := freePort()
	if err != nil {
		return nil, files, 0, err
	}
	args := append([]string{
		"--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", files.Cert,
		"--tls-key-file", files.Key,
		"--tls-ca-cert-file", files.CA,
		"--tls-auth-clients", "no",
	}, extra...)
	s, err := StartServer(args...)
	return s, files, tlsPort, err
}
