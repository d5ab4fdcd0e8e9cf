package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/pipectl/pipectl/internal/operate"
)

// SignatureHeader carries the HMAC-SHA256 of a webhook's raw body, as GitHub signs its
// deliveries: "sha256=" and the hex digest.
const SignatureHeader = "X-Pipectl-Signature-256"

// DefaultDeliveryHeader identifies a delivery when the pipeline names no other header.
const DefaultDeliveryHeader = "X-Pipectl-Delivery"

// Sign returns the signature header value of a body, for senders and tests.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// hook creates a run from a signed delivery. The signature is checked over the raw body
// before anything is parsed or recorded; a bad or missing one is 401 with nothing recorded.
// The body is the run input and meets the inputs schema like any other input. A delivery
// sent again finds the run the first one made (200).
func (s *Server) hook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, ok := s.cfg.Pipelines[name]
	if !ok || p.Triggers.Webhook == nil {
		// The same answer for both, so the route does not tell which pipelines exist.
		s.metrics.deliveries.WithLabelValues("unknown", "refused").Inc()
		s.problem(w, r, http.StatusNotFound, "not-found", "no webhook "+name+" is served here", nil)
		return
	}
	hook := p.Triggers.Webhook
	secret, ok := s.cfg.Secret(hook.Secret)
	if !ok || secret == "" {
		s.log.Error("webhook secret missing from the environment", "pipeline", name, "secret", hook.Secret)
		s.metrics.deliveries.WithLabelValues(name, "error").Inc()
		s.problem(w, r, http.StatusServiceUnavailable, "not-configured", "the webhook of "+name+" has no secret configured on this server", nil)
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		s.metrics.deliveries.WithLabelValues(name, "invalid").Inc()
		return
	}
	addr := clientAddr(r)
	if s.auth.exhausted(addr) {
		w.Header().Set("Retry-After", "1")
		s.problem(w, r, http.StatusTooManyRequests, "too-many-failures", "too many failed signatures from "+addr+"; wait and retry", nil)
		return
	}
	got := r.Header.Get(SignatureHeader)
	want := Sign(secret, body)
	if !strings.HasPrefix(got, "sha256=") || !hmac.Equal([]byte(got), []byte(want)) {
		s.auth.limiter(addr).Allow()
		s.metrics.deliveries.WithLabelValues(name, "bad_signature").Inc()
		s.problem(w, r, http.StatusUnauthorized, "bad-signature", "the "+SignatureHeader+" header is missing or does not sign this body", nil)
		return
	}
	in, err := decodeInput(body)
	if err != nil {
		s.metrics.deliveries.WithLabelValues(name, "invalid").Inc()
		s.problem(w, r, http.StatusBadRequest, "invalid", "input is not JSON: "+err.Error(), nil)
		return
	}
	if in, err = s.cfg.Ops.WebhookInput(p, in); err != nil {
		s.metrics.deliveries.WithLabelValues(name, "invalid").Inc()
		s.fail(w, r, err)
		return
	}
	header := hook.DeliveryHeader
	if header == "" {
		header = DefaultDeliveryHeader
	}
	key := ""
	if id := r.Header.Get(header); id != "" {
		if !validKey.MatchString(id) {
			s.metrics.deliveries.WithLabelValues(name, "invalid").Inc()
			s.problem(w, r, http.StatusBadRequest, "invalid", header+" must be 1 to 200 printable ASCII characters", nil)
			return
		}
		key = "delivery:" + id
	}
	res, err := s.cfg.Ops.Submit(r.Context(), "webhook:"+name, operate.SubmitRequest{Pipeline: p, Input: in, Key: key})
	if err != nil {
		outcome := "error"
		switch operate.KindOf(err) {
		case operate.KindInputSchema:
			outcome = "invalid"
		case operate.KindConflict, operate.KindDisabled:
			outcome = "refused"
		}
		s.metrics.deliveries.WithLabelValues(name, outcome).Inc()
		s.fail(w, r, err)
		return
	}
	outcome := "created"
	if res.Duplicate {
		outcome = "duplicate"
	}
	s.metrics.deliveries.WithLabelValues(name, outcome).Inc()
	s.created(w, r, res)
}
