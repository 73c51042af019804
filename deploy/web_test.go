package deploy_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
)

// The example web config's documented user and password
// (examples/systemd/web-config.yml and docs/deploy.md).
const (
	exampleUser     = "prometheus"
	examplePassword = "change-me-example-only"
	exampleConfig   = repoRoot + "/examples/systemd/web-config.yml"
)

// tlsSetup is a directory holding the example web config unchanged, next to
// a freshly generated certificate and key for 127.0.0.1 (the config names
// them relative to its own directory), and a client that trusts it.
type tlsSetup struct {
	configPath string
	client     *http.Client
	tls        *tls.Config // the client's: trusts the certificate
}

func newTLSSetup(t *testing.T) tlsSetup {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ipsec_exporter test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "tls.crt"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, "tls.key"), "EC PRIVATE KEY", keyDER)
	config, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	configPath := filepath.Join(dir, "web-config.yml")
	if err := os.WriteFile(configPath, config, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tlsConfig := &tls.Config{RootCAs: pool}
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsConfig},
	}
	return tlsSetup{configPath: configPath, client: client, tls: tlsConfig}
}

func writePEM(t *testing.T, path, blockType string, der []byte) {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// scrape GETs /metrics over TLS with the given basic auth (none if user is
// empty) and returns the status code and body.
func (s tlsSetup) scrape(t *testing.T, addr, user, password string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("scrape over TLS: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestExampleWebConfig checks the example's hash is the documented password,
// and that the file has exactly the fields exporter-toolkit knows (the
// toolkit decodes it strictly too, so the end-to-end test also covers this).
func TestExampleWebConfig(t *testing.T) {
	raw, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		TLSServerConfig map[string]string `yaml:"tls_server_config"`
		BasicAuthUsers  map[string]string `yaml:"basic_auth_users"`
	}
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.TLSServerConfig["cert_file"] == "" || c.TLSServerConfig["key_file"] == "" {
		t.Errorf("example does not enable TLS: %v", c.TLSServerConfig)
	}
	hash, ok := c.BasicAuthUsers[exampleUser]
	if !ok {
		t.Fatalf("example has no user %q", exampleUser)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(examplePassword)); err != nil {
		t.Errorf("hash for %q is not the documented example password: %v", exampleUser, err)
	}
	if !strings.Contains(string(raw), examplePassword) {
		t.Error("the example does not say which password its hash belongs to")
	}
}

// TestWebTLSAndBasicAuth runs the real binary with the example web config:
// the right credentials scrape over TLS, wrong or missing ones get 401,
// plain HTTP gets a clean refusal without metrics, and the exporter keeps
// serving afterwards.
func TestWebTLSAndBasicAuth(t *testing.T) {
	setup := newTLSSetup(t)
	e := startExporter(t, nil, "--web.config.file="+setup.configPath)
	e.waitListening(t)

	code, body := setup.scrape(t, e.addr, exampleUser, examplePassword)
	if code != http.StatusOK {
		t.Fatalf("scrape with the right credentials: status %d\n%s", code, body)
	}
	if !strings.Contains(body, "ipsec_exporter_build_info") {
		t.Errorf("scrape lacks ipsec_exporter_build_info:\n%s", body)
	}
	for _, name := range defaultCollectors(t) {
		if _, ok := metricValue(body, `ipsec_scrape_collector_success{collector="`+name+`"}`); !ok {
			t.Errorf("scrape lacks ipsec_scrape_collector_success for collector %s", name)
		}
	}

	for _, c := range []struct{ name, user, password string }{
		{"wrong password", exampleUser, "wrong"},
		{"unknown user", "someone", examplePassword},
		{"no credentials", "", ""},
	} {
		code, body := setup.scrape(t, e.addr, c.user, c.password)
		if code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", c.name, code)
		}
		if strings.Contains(body, "ipsec_") {
			t.Errorf("%s: metrics leaked:\n%s", c.name, body)
		}
	}

	// Plain HTTP to the TLS port: Go's TLS server answers a bare 400 and
	// closes; no metrics, and no crash.
	conn, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: "+e.addr+"\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(bufio.NewReader(conn))
	conn.Close()
	if strings.Contains(string(plain), "ipsec_") {
		t.Errorf("plain HTTP got metrics:\n%s", plain)
	}
	if len(plain) > 0 && !strings.HasPrefix(string(plain), "HTTP/1.0 400") {
		t.Errorf("plain HTTP answer is not a 400:\n%s", plain)
	}
	plainClient := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plainClient.Get("http://" + e.addr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP client got 200 from the TLS port")
		}
	}

	if code, _ := setup.scrape(t, e.addr, exampleUser, examplePassword); code != http.StatusOK {
		t.Errorf("after the plain HTTP attempts, scrape status %d: the exporter stopped serving", code)
	}
	if strings.Contains(e.output.String(), "panic") {
		t.Errorf("exporter panicked:\n%s", e.output.String())
	}
}

// TestMalformedWebConfig: each broken config is a start-up error that
// names the problem, exits non-zero, and leaves nothing listening.
func TestMalformedWebConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, config, want string
	}{
		{"misspelled field", "tls_server_config:\n  cert_fil: tls.crt\n", "cert_fil"},
		{"not yaml", "tls_server_config: [\n", "yaml"},
		{"missing key file", "tls_server_config:\n  cert_file: tls.crt\n  key_file: missing.key\n", "missing.key"},
		{"bad hash", "basic_auth_users:\n  prometheus: not-a-bcrypt-hash\n", "bcrypt"},
	}
	// The certificate may exist; only the key is missing.
	writePEM(t, filepath.Join(dir, "tls.crt"), "CERTIFICATE", []byte("x"))
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yml")
			if err := os.WriteFile(path, []byte(c.config), 0o600); err != nil {
				t.Fatal(err)
			}
			e := startExporter(t, nil, "--web.config.file="+path)
			code := e.waitExit(t, 60*time.Second)
			out := e.output.String()
			if code == 0 {
				t.Errorf("exit status 0 with a broken web config:\n%s", out)
			}
			if !strings.Contains(strings.ToLower(out), strings.ToLower(c.want)) {
				t.Errorf("error does not name the problem (%q):\n%s", c.want, out)
			}
			if conn, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
				conn.Close()
				t.Errorf("something still listens on %s after the exporter exited", e.addr)
			}
		})
	}
}

// TestMissingWebConfigFile: a config path that does not exist is named.
func TestMissingWebConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yml")
	e := startExporter(t, nil, "--web.config.file="+path)
	if code := e.waitExit(t, 60*time.Second); code == 0 {
		t.Errorf("exit status 0 with a missing web config")
	}
	if !strings.Contains(e.output.String(), "nope.yml") {
		t.Errorf("error does not name the file:\n%s", e.output.String())
	}
}
