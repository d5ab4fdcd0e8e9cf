package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

const (
	leakToken = "lk-Zq8Wm2Xv7Rt4Yp9Hs6Jd3Nf"
	leakKey   = "sk-test-Gh5Ua1Kc8Eo3Wi6Tb9Pl"
)

const leakyHTTPSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: leaky-http
inputs:
  type: object
  required: [id]
  properties: {id: {type: string}}
idempotency: {key: "${{ inputs.id }}"}
secrets: [LEAK_TOKEN]
defaults:
  timeout: 5s
  retry: {max_attempts: 1}
steps:
  - id: same_origin
    type: http
    method: GET
    url: "http://target.invalid/hop"
    query: {to: same, key: "${{ secrets.LEAK_TOKEN }}"}
    headers: &secret_headers
      Authorization: "Basic ${{ base64.encode(bytes('u:' + secrets.LEAK_TOKEN)) }}"
      X-Api-Key: "${{ secrets.LEAK_TOKEN.upperAscii() }}"
      X-Part: "${{ secrets.LEAK_TOKEN.substring(0, 14) }}"
      X-Plain: "${{ secrets.LEAK_TOKEN }}"
  - id: cross_origin
    type: http
    needs: [same_origin]
    method: GET
    url: "http://target.invalid/hop"
    query: {to: other}
    headers: *secret_headers
  - id: echo
    type: http
    needs: [cross_origin]
    method: GET
    url: "http://target.invalid/echo"
    query: {key: "${{ secrets.LEAK_TOKEN }}"}
    headers: *secret_headers
`

const leakyExecSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: leaky-exec
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
secrets: [LEAK_TOKEN]
defaults:
  timeout: 5s
  retry: {max_attempts: 1}
steps:
  - id: tool
    type: exec
    command: [./leak.sh]
    env:
      TOKEN: "${{ secrets.LEAK_TOKEN }}"
      TOKEN_B64: "${{ base64.encode(bytes(secrets.LEAK_TOKEN)) }}"
`

// leakScript writes the base64 form whole and then the raw token, and pads stderr so that the
// 500-byte tail kept for the error starts in the middle of the token.
const leakScript = `#!/bin/sh
printf 'b64=%s token=%s ' "$TOKEN_B64" "$TOKEN" >&2
printf '%0440d' 0 >&2
printf 'stdout %s %s\n' "$TOKEN" "$TOKEN_B64"
exit 3
`

// leakyWALSpec fetches through the same-origin redirect (whose landing echoes the secret
// headers into the recorded response), then hangs in a child so that pipectl can be killed
// with the result in the WAL, before any checkpoint copies it into the database file.
const leakyWALSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: leaky-wal
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
secrets: [LEAK_TOKEN]
defaults:
  timeout: 10s
  retry: {max_attempts: 1}
steps:
  - id: fetch
    type: http
    method: GET
    url: "http://target.invalid/hop"
    query: {to: same, key: "${{ secrets.LEAK_TOKEN }}"}
    headers:
      Authorization: "Basic ${{ base64.encode(bytes('u:' + secrets.LEAK_TOKEN)) }}"
      X-Api-Key: "${{ secrets.LEAK_TOKEN.upperAscii() }}"
      X-Plain: "${{ secrets.LEAK_TOKEN }}"
  - {id: hang, type: exec, needs: [fetch], command: [./hang.sh]}
`

const leakyLLMSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: leaky-llm
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
defaults:
  timeout: 5s
  retry: {max_attempts: 1}
steps:
  - id: ask
    type: llm
    model: test-model
    prompt: "Say hello to ${{ inputs.id }}"
    output: {schema: {type: object}}
`

// headerSink is a target that keeps the headers each path received.
type headerSink struct {
	mu   sync.Mutex
	seen map[string][]http.Header
}

func (h *headerSink) add(path string, hdr http.Header) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen == nil {
		h.seen = map[string][]http.Header{}
	}
	h.seen[path] = append(h.seen[path], hdr.Clone())
}

func (h *headerSink) get(path string) []http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[path]
}

// dumpHeaders writes every request header and the query, in a stable order.
func dumpHeaders(r *http.Request) string {
	var keys []string
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(r.Header[k], ", "))
	}
	fmt.Fprintf(&b, "query: %s\n", r.URL.RawQuery)
	return b.String()
}

// TestSecretsNeverLeakThroughTheCLI attacks pipectl's secrets from every side a careless target
// or provider offers, through the real binary: a 500 whose long body echoes every request header
// (cut for the error at 300 bytes, with a secret across the cut), a redirect to another host
// name, an exec child that prints its secret environment (the error keeps a 500-byte tail that
// starts inside the secret), and a model provider whose 401 quotes the API key. No secret, no
// 8-character piece of one and no encoded form may appear in the SQLite files (WAL included),
// the logs, the --llm-record file or any command's output.
func TestSecretsNeverLeakThroughTheCLI(t *testing.T) {
	// The other origin: another host name for the same loopback, as a browser would count it.
	other := &headerSink{}
	otherLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	otherSrv := &httptest.Server{Listener: otherLn, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		other.add(r.URL.Path, r.Header)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"landed": "other", "headers": dumpHeaders(r)})
	})}}
	otherSrv.Start()
	defer otherSrv.Close()
	otherHost := "localhost"
	if addrs, err := net.LookupHost("localhost"); err != nil || len(addrs) == 0 {
		otherHost = "127.0.0.2"
	}
	otherURL := fmt.Sprintf("http://%s:%d", otherHost, otherLn.Addr().(*net.TCPAddr).Port)

	same := &headerSink{}
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		same.add(r.URL.Path, r.Header)
		switch r.URL.Path {
		case "/hop":
			if r.URL.Query().Get("to") == "other" {
				http.Redirect(w, r, otherURL+"/landing", http.StatusFound)
			} else {
				http.Redirect(w, r, "/landing", http.StatusFound)
			}
		case "/landing":
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"landed": "same", "headers": dumpHeaders(r)})
		case "/echo":
			// 280 bytes, then the raw secret across the 300-byte cut, then everything else.
			body := strings.Repeat("f", 280) + " x-plain=" + r.Header.Get("X-Plain") + "\n" + dumpHeaders(r)
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, body)
		}
	}))
	defer target.Close()
	provider := llmtest.NewUnauthorized()
	defer provider.Close()

	c := newCLI(t, "")
	files := map[string]string{"http.yaml": leakyHTTPSpec, "exec.yaml": leakyExecSpec, "llm.yaml": leakyLLMSpec, "leak.sh": leakScript,
		"wal.yaml": leakyWALSpec, "hang.sh": "#!/bin/sh\ntouch hung\nexec sleep 5\n"}
	for name, body := range files {
		body = strings.ReplaceAll(body, targetURL, target.URL)
		if err := os.WriteFile(filepath.Join(c.dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var outputs []string
	run := func(wantCode int, args ...string) string {
		t.Helper()
		cmd := c.command(args...)
		cmd.Env = append(cmd.Env, "LEAK_TOKEN="+leakToken, "OPENAI_API_KEY="+leakKey, "OPENAI_BASE_URL="+provider.URL+"/v1")
		out, err := cmd.CombinedOutput()
		outputs = append(outputs, string(out))
		if code := exitCodeOf(err); code != wantCode {
			t.Fatalf("pipectl %s: exit %d, want %d\n%s", strings.Join(args, " "), code, wantCode, out)
		}
		return string(out)
	}
	record := filepath.Join(c.dir, "calls.json")
	run(1, "run", "http.yaml", "--input", `{"id": "h1"}`)
	run(1, "run", "exec.yaml", "--input", `{"id": "e1"}`, "--log-format", "text")
	run(1, "run", "llm.yaml", "--input", `{"id": "l1"}`, "--llm-record", record)

	// The targets saw what they had to: the same origin got the secret headers after its
	// redirect, the other host name none of them.
	if got := same.get("/landing"); len(got) != 1 || got[0].Get("X-Api-Key") != strings.ToUpper(leakToken) {
		t.Fatalf("same-origin redirect lost the secret headers: %v", got)
	}
	landed := other.get("/landing")
	if len(landed) != 1 {
		t.Fatalf("the cross-origin redirect was not followed: %v", landed)
	}
	for _, h := range []string{"Authorization", "X-Api-Key", "X-Part", "X-Plain"} {
		if v := landed[0].Get(h); v != "" {
			t.Errorf("the other origin received %s: %q", h, v)
		}
	}
	if echo := same.get("/echo"); len(echo) != 1 || echo[0].Get("X-Plain") != leakToken {
		t.Fatalf("the echo target did not get the secret, so the test proves nothing: %v", echo)
	}

	var runs []map[string]any
	if err := json.Unmarshal([]byte(run(0, "runs", "list", "--format", "json")), &runs); err != nil || len(runs) != 3 {
		t.Fatalf("runs list: %v %v", err, runs)
	}
	run(0, "runs", "list")
	run(0, "dlq", "list")
	run(0, "dlq", "list", "--format", "json")
	shown := map[string]string{}
	for _, r := range runs {
		id := r["id"].(string)
		shown[r["pipeline"].(string)] = run(0, "runs", "show", id, "--format", "json")
		run(0, "runs", "show", id)
	}
	// What was recorded instead: the request with *** in full, the errors that say what
	// happened.
	for pipeline, want := range map[string][]string{
		"leaky-http": {`"X-Api-Key": "***"`, `"X-Part": "***"`, `"Authorization": "***"`, `key=***`, `HTTP 500`},
		"leaky-exec": {`"TOKEN": "***"`, `"TOKEN_B64": "***"`, `exit status 3`},
		"leaky-llm":  {`HTTP 401`, `Incorrect API key provided`},
	} {
		for _, w := range want {
			if !strings.Contains(shown[pipeline], w) {
				t.Errorf("runs show of %s lacks %s:\n%s", pipeline, w, shown[pipeline])
			}
		}
	}

	sinks := map[string][]byte{}
	ledgerFiles, _ := filepath.Glob(filepath.Join(c.dir, "ledger.db*"))
	if len(ledgerFiles) == 0 {
		t.Fatal("no ledger files") // the WAL, when a process left one, is read too
	}
	for _, f := range append(ledgerFiles, record) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sinks[filepath.Base(f)] = data
	}
	for i, out := range outputs {
		sinks[fmt.Sprintf("output of command %d", i)] = []byte(out)
	}
	if !strings.Contains(string(sinks["calls.json"]), "Incorrect API key") {
		t.Fatalf("the recording holds no error to check:\n%s", sinks["calls.json"])
	}
	for name, data := range sinks {
		for _, secret := range []string{leakToken, leakKey} {
			if form, ok := leakedForm(string(data), secret); ok {
				t.Errorf("%s gives the secret away as %q", name, form)
			}
		}
	}

	// The WAL: kill pipectl while a later step runs, so that the recorded response of the
	// first is still only in ledger.db-wal, and read it raw.
	var killed bytes.Buffer
	cmd := c.command("run", "wal.yaml", "--input", `{"id": "w1"}`)
	cmd.Env = append(cmd.Env, "LEAK_TOKEN="+leakToken, "OPENAI_API_KEY="+leakKey)
	cmd.Stdout, cmd.Stderr = &killed, &killed
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(c.dir, "hung")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the wal run never reached its hanging step")
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	wal, err := os.ReadFile(filepath.Join(c.dir, "ledger.db-wal"))
	if err != nil || !bytes.Contains(wal, []byte(`landed`)) {
		t.Fatalf("the WAL does not hold the fetch step's response (%v): the check would prove nothing", err)
	}
	for _, secret := range []string{leakToken, leakKey} {
		for name, data := range map[string][]byte{"ledger.db-wal": wal, "output of the killed run": killed.Bytes()} {
			if form, ok := leakedForm(string(data), secret); ok {
				t.Errorf("%s gives the secret away as %q", name, form)
			}
		}
	}
}

// leakedForm looks for a secret in text: any 8 characters of it, of its upper-cased form, of
// its base64 (alone or after "u:"), hex and URL-escaped forms.
func leakedForm(text, secret string) (string, bool) {
	var forms []string
	windows := func(s string, from, to int) {
		for i := from; i+8 <= len(s)-to; i++ {
			forms = append(forms, s[i:i+8])
		}
	}
	windows(secret, 0, 0)
	windows(strings.ToUpper(secret), 0, 0)
	windows(url.QueryEscape(secret), 0, 0)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		windows(enc.EncodeToString([]byte(secret)), 0, 4)
		windows(enc.EncodeToString([]byte("u:"+secret)), 4, 4)
	}
	h := hex.EncodeToString([]byte(secret))
	windows(h, 0, 0)
	windows(strings.ToUpper(h), 0, 0)
	for _, f := range forms {
		if strings.Contains(text, f) {
			return f, true
		}
	}
	return "", false
}
