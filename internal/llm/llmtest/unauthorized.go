package llmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
)

// NewUnauthorized starts an OpenAI-compatible endpoint that refuses every request with a 401
// whose message quotes the Authorization header it received, in full, as careless gateways do:
// the attack on a client that puts provider errors into logs and ledgers.
func NewUnauthorized() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"message": fmt.Sprintf("Incorrect API key provided in %q. You can find your API key at https://example.invalid/keys.", r.Header.Get("Authorization")),
			"type":    "invalid_request_error", "code": "invalid_api_key",
		}})
	}))
}
