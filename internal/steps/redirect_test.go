package steps

import (
	"context"
	"net/http"
	"testing"
)

func TestRedirectDropsSecretHeadersAcrossOrigins(t *testing.T) {
	tests := []struct {
		from, to string
		keeps    bool
	}{
		{"http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b", true},
		{"http://example.com/a", "http://EXAMPLE.com:80/b", true},
		{"https://example.com/a", "https://example.com:443/b", true},
		{"http://127.0.0.1:8080/a", "http://localhost:8080/b", false},
		{"http://127.0.0.1:8080/a", "http://127.0.0.1:8081/b", false},
		{"https://example.com/a", "http://example.com/b", false},
		{"http://example.com/a", "http://api.example.com/b", false},
	}
	for _, tc := range tests {
		ctx := context.WithValue(context.Background(), secretHeadersKey{}, []string{"X-Api-Key"})
		first, _ := http.NewRequestWithContext(ctx, http.MethodGet, tc.from, nil)
		next, _ := http.NewRequestWithContext(ctx, http.MethodGet, tc.to, nil)
		next.Header.Set("X-Api-Key", "k")
		next.Header.Set("X-Other", "o")
		if err := checkRedirect(next, []*http.Request{first}); err != nil {
			t.Fatal(err)
		}
		if got := next.Header.Get("X-Api-Key") != ""; got != tc.keeps || next.Header.Get("X-Other") == "" {
			t.Errorf("%s -> %s: secret header kept %v, want %v; other header %q", tc.from, tc.to, got, tc.keeps, next.Header.Get("X-Other"))
		}
	}
	// A write is never redirected: its body would follow the server's choice.
	post, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/b", nil)
	first, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/a", nil)
	if err := checkRedirect(post, []*http.Request{first}); err != http.ErrUseLastResponse {
		t.Fatalf("a redirected POST: %v", err)
	}
}
