package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/server"
)

func TestWebhookSignatures(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{})
			body := `{"id": "h-1", "qty": 3}`
			good := server.Sign(hookSecret, []byte(body))
			before := b.counts()
			for _, tc := range []struct {
				name, body string
				headers    []string
				status     int
				detail     string
			}{
				{"no signature", body, nil, 401, "missing or does not sign"},
				{"signature of another body", body, []string{server.SignatureHeader, server.Sign(hookSecret, []byte(`{"id": "h-2", "qty": 3}`))}, 401, "does not sign"},
				{"wrong secret", body, []string{server.SignatureHeader, server.Sign("guess", []byte(body))}, 401, "does not sign"},
				{"bare hex without the scheme", body, []string{server.SignatureHeader, strings.TrimPrefix(good, "sha256=")}, 401, "does not sign"},
				{"body changed after signing", body + " ", []string{server.SignatureHeader, good}, 401, "does not sign"},
				{"valid signature, input against the schema", `{"id": 1}`, []string{server.SignatureHeader, server.Sign(hookSecret, []byte(`{"id": 1}`))}, 422, "inputs schema"},
				{"valid signature, not JSON", `{`, []string{server.SignatureHeader, server.Sign(hookSecret, []byte(`{`))}, 400, "not JSON"},
				{"too large", strings.Repeat(" ", 5000), []string{server.SignatureHeader, good}, 413, "exceeds"},
				{"no webhook on this pipeline", body, []string{server.SignatureHeader, good}, 404, "no webhook"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					path := "/hooks/orders"
					if strings.HasPrefix(tc.name, "no webhook") {
						path = "/hooks/waiter"
					}
					code, got := b.do("POST", path, "", tc.body, tc.headers...)
					if code != tc.status || !strings.Contains(string(got), tc.detail) {
						t.Fatalf("%d %s", code, got)
					}
				})
			}
			if after := b.counts(); after != before {
				t.Fatalf("refused deliveries recorded something: %s -> %s", before, after)
			}
			code, first := b.do("POST", "/hooks/orders", "", body, server.SignatureHeader, good, "X-Pipectl-Delivery", "d-1")
			var r1 createdRun
			decodeJSON(t, first, &r1)
			if code != http.StatusCreated || r1.IdempotencyKey != "delivery:d-1" {
				t.Fatalf("delivery: %d %s", code, first)
			}
			// The sender retries the same delivery: the run it made, not a second one.
			code, again := b.do("POST", "/hooks/orders", "", body, server.SignatureHeader, good, "X-Pipectl-Delivery", "d-1")
			var r2 createdRun
			decodeJSON(t, again, &r2)
			if code != http.StatusOK || r2.ID != r1.ID {
				t.Fatalf("redelivery: %d %s", code, again)
			}
			// Another delivery id reusing a body is a new run; a delivery id reused with another
			// body is refused.
			if code, got := b.do("POST", "/hooks/orders", "", body, server.SignatureHeader, good, "X-Pipectl-Delivery", "d-2"); code != 201 {
				t.Fatalf("second delivery: %d %s", code, got)
			}
			other := `{"id": "h-9", "qty": 1}`
			if code, got := b.do("POST", "/hooks/orders", "", other, server.SignatureHeader, server.Sign(hookSecret, []byte(other)), "X-Pipectl-Delivery", "d-1"); code != 409 {
				t.Fatalf("delivery id reused: %d %s", code, got)
			}
			full, _, _ := b.ops.Show(t.Context(), r1.ID)
			if full.Events[0].Actor != "webhook:orders" {
				t.Fatalf("created by %s", full.Events[0].Actor)
			}
			_, metrics := b.do("GET", "/metrics", "", "")
			for _, want := range []string{`pipectl_webhook_deliveries_total{outcome="bad_signature",pipeline="orders"} 5`,
				`pipectl_webhook_deliveries_total{outcome="created",pipeline="orders"} 2`, `pipectl_webhook_deliveries_total{outcome="duplicate",pipeline="orders"} 1`} {
				if !strings.Contains(string(metrics), want) {
					t.Errorf("metrics lack %s", want)
				}
			}
		})
	}
}

// A pipeline's triggers.webhook.input picks the run input out of a larger delivery; what it
// makes must meet the inputs schema, and a body it cannot map is refused with nothing recorded.
func TestWebhookInputMapping(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{})
			send := func(body string) (int, []byte) {
				return b.do("POST", "/hooks/mapped", "", body, server.SignatureHeader, server.Sign(hookSecret, []byte(body)))
			}
			before := b.counts()
			for _, tc := range []struct{ body, detail string }{
				{`{"order": {"lines": [1]}}`, "triggers.webhook.input"},
				{`{"order": {"ref": "o-1", "lines": []}}`, "inputs schema"},
				{`{"order": {"ref": "O 7; rm", "lines": [1]}}`, "inputs schema"},
			} {
				if code, got := send(tc.body); code != 422 || !strings.Contains(string(got), tc.detail) {
					t.Fatalf("%s: %d %s", tc.body, code, got)
				}
			}
			if after := b.counts(); after != before {
				t.Fatalf("refused deliveries recorded something: %s -> %s", before, after)
			}
			code, got := send(`{"order": {"ref": "o-7", "lines": [1, 2, 3], "note": "ignored"}, "sender": {"login": "x"}}`)
			var r createdRun
			decodeJSON(t, got, &r)
			if code != http.StatusCreated {
				t.Fatalf("mapped delivery: %d %s", code, got)
			}
			run, err := b.store.GetRun(t.Context(), r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if string(run.Input) != `{"id":"o-7","qty":3}` {
				t.Fatalf("run input %s", run.Input)
			}
		})
	}
}
