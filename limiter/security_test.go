package limiter

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/config"
	"github.com/redquota/redquota/internal/redistest"
)

func clientFromEnv(t *testing.T, env map[string]string) (*Limiter, func(), error) {
	t.Helper()
	// Timeout: a TLS handshake and AUTH under -race on a loaded machine once
	// took past the default 250 ms; these tests are about TLS and ACLs.
	return clientFromEnvOpts(t, env, Options{Prefix: "rq", Timeout: 10 * time.Second})
}

func clientFromEnvOpts(t *testing.T, env map[string]string, o Options) (*Limiter, func(), error) {
	t.Helper()
	c, err := config.Parse(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		return nil, nil, err
	}
	rdb := c.NewClient()
	return New(rdb, o), func() { _ = rdb.Close() }, nil
}

// TLS: a server that speaks only TLS on its TLS port, with a CA the test
// made; rediss:// plus REDIS_TLS_CA_FILE connects, and without the CA the
// certificate is refused. AUTH with an ACL user restricted to rq:* keys:
// decisions work, other keys are refused, and no error carries the password.
func TestTLSAndACL(t *testing.T) {
	if !redistest.Available() && !redistest.Required() {
		t.Skip("redis-server not installed (Debian package redis-server)")
	}
	const pw = "s3cret-Pa55word"
	srv, files, tlsPort, err := redistest.StartTLSServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	admin := srv.Client()
	defer admin.Close()
	if err := admin.Do(ctx, "ACL", "SETUSER", "app", "on", ">"+pw, "~rq:*", "+@all", "-@dangerous").Err(); err != nil {
		t.Fatal(err)
	}
	url := "rediss://app:" + pw + "@127.0.0.1:" + strconv.Itoa(tlsPort)

	lim, closeFn, err := clientFromEnv(t, map[string]string{"REDIS_URL": url, "REDIS_TLS_CA_FILE": files.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if r, err := lim.Allow(ctx, Key("user:1", PerSecond(2)).Take(1)); err != nil || !r.Allowed {
		t.Fatalf("over TLS as the ACL user: %+v %v", r, err)
	}

	// A limiter with another prefix touches keys the user may not: refused.
	c, _ := config.Parse(func(k string) (string, bool) {
		v, ok := map[string]string{"REDIS_URL": url, "REDIS_TLS_CA_FILE": files.CA}[k]
		return v, ok
	})
	rdb := c.NewClient()
	defer rdb.Close()
	_, err = New(rdb, Options{Prefix: "other", Timeout: 10 * time.Second}).Allow(ctx, Key("user:1", PerSecond(2)).Take(1))
	if err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("keys outside ~rq:* allowed: %v", err)
	}
	checkNoSecret(t, err, pw)

	// Without the test CA the server's certificate is not trusted. The
	// limiter's default 250 ms timeout could fire first on a loaded machine
	// (a TLS handshake plus a retry); this one waits for the handshake's verdict.
	lim2, close2, err := clientFromEnvOpts(t, map[string]string{"REDIS_URL": url}, Options{Prefix: "rq", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer close2()
	_, err = lim2.Allow(ctx, Key("user:1", PerSecond(2)).Take(1))
	var certErr *tls.CertificateVerificationError
	var authErr x509.UnknownAuthorityError
	if !errors.As(err, &certErr) && !errors.As(err, &authErr) {
		t.Fatalf("untrusted certificate: got %v, want a certificate verification error", err)
	}
	checkNoSecret(t, err, pw)

	// A wrong password: refused, and the error does not echo what was sent.
	bad := "rediss://app:wrong-" + pw + "@127.0.0.1:" + strconv.Itoa(tlsPort)
	lim3, close3, err := clientFromEnv(t, map[string]string{"REDIS_URL": bad, "REDIS_TLS_CA_FILE": files.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer close3()
	_, err = lim3.Allow(ctx, Key("user:1", PerSecond(2)).Take(1))
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	checkNoSecret(t, err, pw)
	if !errors.Is(err, ErrUnavailable) && !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("wrong password: %v", err)
	}
}

func checkNoSecret(t *testing.T, err error, secret string) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Fatalf("error carries the password: %v", err)
	}
}
