package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
)

// servedDir is a folder of pipelines and a pipectl.yaml with one admin token; it returns the
// folder and the token.
func servedDir(t *testing.T, specs map[string]string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "pipelines"), 0o755)
	for name, spec := range specs {
		if err := os.WriteFile(filepath.Join(dir, "pipelines", name+".yaml"), []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(binary, "token", "create", "ci-admin", "--role", "admin").Output()
	if err != nil {
		t.Fatal(err)
	}
	tok := regexp.MustCompile(`pct_[A-Za-z0-9_-]+`).FindString(string(out))
	line := regexp.MustCompile(`- \{name: ci-admin.*\}`).FindString(string(out))
	if tok == "" || line == "" {
		t.Fatalf("token create printed %s", out)
	}
	if err := os.WriteFile(filepath.Join(dir, "pipectl.yaml"), []byte("server:\n  tokens:\n    "+line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, tok
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type serveProc struct {
	cmd  *exec.Cmd
	addr string
	mu   sync.Mutex
	logs strings.Builder
	done chan error
}

func (p *serveProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// startServe starts pipectl serve in dir and waits until it answers /readyz.
func startServe(t *testing.T, dir, ledgerDSN string, extra ...string) *serveProc {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"--ledger", ledgerDSN, "--log-format", "text", "serve", "--addr", addr}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ORDERS_SECRET=hook-secret")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, addr: addr, done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	scheme := "http"
	for _, a := range extra {
		if a == "--tls-cert" {
			scheme = "https"
		}
	}
	client := insecureClient()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(scheme + "://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not become ready: %v\n%s", err, p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func insecureClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// stop sends SIGTERM and returns the exit code.
func (p *serveProc) stop(t *testing.T, within time.Duration) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return exitCodeOf(err)
	case <-time.After(within):
		t.Fatalf("serve did not stop within %s\n%s", within, p.log())
	}
	return -1
}

func (p *serveProc) post(t *testing.T, tok, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+p.addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

const slowSpecServe = `apiVersion: pipectl/v1
kind: Pipeline
name: slow
inputs: {type: object, properties: {id: {type: string}}}
steps:
  - id: work
    type: exec
    command: [sleep, "1.5"]
  - id: done
    type: transform
    output: finished
`

// SIGTERM while a run executes in the server's own worker: the server stops listening at
// once, lets the run finish within --drain, and exits 0; the run is succeeded, not lost.
func TestServeGracefulShutdownWithARunInFlight(t *testing.T) {
	dir, tok := servedDir(t, map[string]string{"slow": slowSpecServe})
	dsn := "sqlite:" + filepath.Join(dir, "ledger.db")
	p := startServe(t, dir, dsn, "--workers", "1", "--drain", "20s", "--poll", "50ms")
	code, body := p.post(t, tok, "/api/v1/pipelines/slow/runs", `{"id": "inflight"}`)
	if code != 201 {
		t.Fatalf("submit: %d %s", code, body)
	}
	var created struct{ ID string }
	json.Unmarshal([]byte(body), &created)
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// Wait until the step is running: the run is truly in flight.
	deadline := time.Now().Add(15 * time.Second)
	for {
		atts, _ := store.Attempts(context.Background(), created.ID)
		if len(atts) > 0 && atts[0].Outcome == domain.OutcomeRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run never started\n%s", p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	if _, err := http.Get("http://" + p.addr + "/healthz"); err == nil {
		t.Error("the server still accepts connections while draining")
	}
	select {
	case err := <-p.done:
		if c := exitCodeOf(err); c != 0 {
			t.Fatalf("exit %d\n%s", c, p.log())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit\n%s", p.log())
	}
	r, err := store.GetRun(context.Background(), created.ID)
	if err != nil || r.State != domain.StateSucceeded {
		t.Fatalf("after shutdown the run is %v (%v)\n%s", r.State, err, p.log())
	}
	if !strings.Contains(p.log(), "shutting down") || !strings.Contains(p.log(), "msg=stopped") {
		t.Fatalf("log:\n%s", p.log())
	}
}

// A run that outlasts --drain is handed back, not lost: its lease is released, and the next
// server to start finishes it.
func TestServeHandsBackWhatDrainCannotFinish(t *testing.T) {
	dir, tok := servedDir(t, map[string]string{"slow": strings.Replace(slowSpecServe, `"1.5"`, `"3"`, 1)})
	dsn := "sqlite:" + filepath.Join(dir, "ledger.db")
	p := startServe(t, dir, dsn, "--workers", "1", "--drain", "300ms", "--poll", "50ms")
	_, body := p.post(t, tok, "/api/v1/pipelines/slow/runs", `{"id": "long"}`)
	var created struct{ ID string }
	json.Unmarshal([]byte(body), &created)
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	waitRun(t, store, created.ID, func(r *domain.Run) bool { return r.State == domain.StateProcessing && r.LeaseOwner != "" })
	time.Sleep(300 * time.Millisecond)
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.log())
	}
	r, _ := store.GetRun(context.Background(), created.ID)
	if r.State == domain.StateSucceeded || r.LeaseExpires.After(time.Now()) {
		t.Fatalf("after a short drain: %s, lease until %s", r.State, r.LeaseExpires)
	}
	p2 := startServe(t, dir, dsn, "--workers", "1", "--poll", "50ms")
	waitRun(t, store, created.ID, func(r *domain.Run) bool { return r.State == domain.StateSucceeded })
	p2.stop(t, 15*time.Second)
}

func waitRun(t *testing.T, store *ledger.Store, id string, ok func(*domain.Run) bool) *domain.Run {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := store.GetRun(context.Background(), id)
		if err == nil && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: %+v %v", id, r, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

const tickSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: tick
triggers:
  schedule: {every: 1s}
steps:
  - id: note
    type: transform
    output: tick
`

// Two servers on one PostgreSQL ledger fire the same schedule: every slot gets exactly one
// run, and no slot between the first and the last is missed.
func TestServeScheduleTwoServersOnePostgres(t *testing.T) {
	dsn := postgresDSN(t)
	dir, tok := servedDir(t, map[string]string{"tick": tickSpec})
	a := startServe(t, dir, dsn, "--workers", "1", "--poll", "100ms")
	b := startServe(t, dir, dsn, "--workers", "1", "--poll", "100ms")
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	time.Sleep(12500 * time.Millisecond)
	req, _ := http.NewRequest("GET", "http://"+a.addr+"/api/v1/pipelines", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	listing, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(listing), `"every": "1s"`) || !strings.Contains(string(listing), `"next_scheduled_at"`) {
		t.Errorf("pipelines: %s", listing)
	}
	resp, err = http.Get("http://" + a.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `pipectl_schedule_lag_seconds_count{pipeline="tick"}`) {
		t.Errorf("no schedule lag in the metrics")
	}
	a.stop(t, 20*time.Second)
	b.stop(t, 20*time.Second)
	runs, err := store.ListRuns(context.Background(), ledger.RunFilter{Pipeline: "tick"})
	if err != nil {
		t.Fatal(err)
	}
	perSlot := map[string]int{}
	var slots []time.Time
	for _, r := range runs {
		perSlot[r.IdempotencyKey]++
		ts, err := time.Parse("2006-01-02T15:04:05.000Z", strings.TrimPrefix(r.IdempotencyKey, "schedule:"))
		if err != nil {
			t.Fatalf("run %s has key %q", r.ID, r.IdempotencyKey)
		}
		slots = append(slots, ts)
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i].Before(slots[j]) })
	if len(slots) < 10 {
		t.Fatalf("%d slots in 12s\n%s\n%s", len(slots), a.log(), b.log())
	}
	for k, n := range perSlot {
		if n != 1 {
			t.Errorf("slot %s has %d runs", k, n)
		}
	}
	for i := 1; i < len(slots); i++ {
		if d := slots[i].Sub(slots[i-1]); d != time.Second {
			t.Errorf("between %s and %s: %s", slots[i-1], slots[i], d)
		}
	}
	// Both servers fired slots; the ledger kept one run for each.
	created := strings.Count(a.log(), "schedule: run created") + strings.Count(b.log(), "schedule: run created")
	if created != len(slots) {
		t.Errorf("%d creations logged for %d runs", created, len(slots))
	}
	succeeded := 0
	for _, r := range runs {
		if r.State == domain.StateSucceeded {
			succeeded++
		}
	}
	if succeeded < len(runs)-2 {
		t.Errorf("only %d of %d scheduled runs executed", succeeded, len(runs))
	}
	t.Logf("%d slots, one run each; server a created %d, b %d", len(slots), strings.Count(a.log(), "schedule: run created"), strings.Count(b.log(), "schedule: run created"))
}

const hookSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: orders
inputs: {type: object, required: [id], properties: {id: {type: string}}}
triggers:
  webhook: {secret: ORDERS_SECRET}
steps:
  - id: ok
    type: transform
    output: "${{ inputs.id }}"
`

// serve over TLS, with the webhook secret from the environment: a signed delivery makes a run
// that the in-process worker executes; the CLI sees it like any other.
func TestServeTLSAndWebhook(t *testing.T) {
	dir, tok := servedDir(t, map[string]string{"orders": hookSpec})
	cert, key := selfSigned(t, dir)
	dsn := "sqlite:" + filepath.Join(dir, "ledger.db")
	p := startServe(t, dir, dsn, "--tls-cert", cert, "--tls-key", key, "--poll", "50ms")
	client := insecureClient()
	if resp, err := http.Get("http://" + p.addr + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP answered on a TLS server")
	}
	body := `{"id": "A-1"}`
	req, _ := http.NewRequest("POST", "https://"+p.addr+"/hooks/orders", strings.NewReader(body))
	req.Header.Set("X-Pipectl-Signature-256", sign("hook-secret", body))
	req.Header.Set("X-Pipectl-Delivery", "abc")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("%d %s", resp.StatusCode, data)
	}
	var created struct{ ID string }
	json.Unmarshal(data, &created)
	req, _ = http.NewRequest("GET", "https://"+p.addr+"/api/v1/runs/"+created.ID, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	for deadline := time.Now().Add(15 * time.Second); ; {
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(data), `"state": "succeeded"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s\n%s", data, p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The dashboard from the same binary: over TLS its session cookie is Secure, and the
	// run shows on its list.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Transport: client.Transport, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = browser.Get("https://" + p.addr + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if resp.StatusCode != 200 || m == nil || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("sign-in page: %d %s", resp.StatusCode, page)
	}
	resp, err = browser.PostForm("https://"+p.addr+"/signin", url.Values{"csrf": {string(m[1])}, "token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	secure := false
	for _, c := range resp.Cookies() {
		secure = secure || (c.Name == "pipectl_session" && c.Secure && c.HttpOnly && c.SameSite == http.SameSiteStrictMode)
	}
	if resp.StatusCode != http.StatusSeeOther || !secure {
		t.Fatalf("sign-in: %d, cookies %v", resp.StatusCode, resp.Header["Set-Cookie"])
	}
	resp, err = browser.Get("https://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), created.ID) {
		t.Fatalf("runs page: %d %s", resp.StatusCode, page)
	}
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	// The API's document is the CLI's.
	cliDoc, err := exec.Command(binary, "--ledger", dsn, "runs", "show", created.ID, "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	json.Unmarshal(cliDoc, &a)
	json.Unmarshal(data, &b)
	if fmt.Sprint(a["run"]) != fmt.Sprint(b["run"]) || fmt.Sprint(a["events"]) != fmt.Sprint(b["events"]) {
		t.Fatalf("CLI and API differ:\n%s\n%s", cliDoc, data)
	}
	if strings.Contains(p.log(), tok) || strings.Contains(p.log(), "hook-secret") {
		t.Fatal("a token or a secret reached the log")
	}
}

func TestServeRefusesToStartWithoutTokensOrWithBadOnes(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "pipelines"), 0o755)
	os.WriteFile(filepath.Join(dir, "pipelines", "tick.yaml"), []byte(tickSpec), 0o644)
	for _, tc := range []struct{ config, want string }{
		{"providers: {}\n", "no server.tokens"},
		{"server:\n  tokens:\n    - {name: x, role: root, sha256: " + strings.Repeat("a", 64) + "}\n", `unknown role "root"`},
		{"server:\n  tokens:\n    - {name: x, role: admin, sha256: abc}\n", "sha256 must be 64 hex digits"},
		{"server:\n  tokenz: []\n", "field tokenz not found"},
	} {
		os.WriteFile(filepath.Join(dir, "pipectl.yaml"), []byte(tc.config), 0o644)
		cmd := exec.Command(binary, "--ledger", "sqlite:"+filepath.Join(dir, "l.db"), "serve", "--addr", freeAddr(t))
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if exitCodeOf(err) != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("config %q: exit %d %s", tc.config, exitCodeOf(err), out)
		}
	}
	out, err := exec.Command(binary, "token", "create", "bob", "--role", "superuser").CombinedOutput()
	if exitCodeOf(err) != 2 || !strings.Contains(string(out), "--role is viewer, reviewer, operator or admin") {
		t.Errorf("token create with a bad role: %d %s", exitCodeOf(err), out)
	}
}

func sign(secret, body string) string {
	// The same scheme as internal/server.Sign, computed here from the standard library so
	// that the test does not trust the code under test.
	return "sha256=" + hmacHex(secret, body)
}

func selfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return cert, key
}

func hmacHex(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}
