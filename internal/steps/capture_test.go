package steps

import (
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
)

// A child writes a secret across the output cap, in small writes: what is kept must not end
// with the secret's first bytes, which redaction would no longer recognise.
func TestCappedRedactsBeforeTheCut(t *testing.T) {
	const secret = "cap-Secret-9Kd2Lq7Wx4"
	for _, at := range []int{1, 4, 8, 12, len(secret) - 1} {
		c := &capped{max: 100, red: domain.NewRedactor([]string{secret})}
		text := strings.Repeat("a", 100-at) + secret + strings.Repeat("b", 50)
		for i := 0; i < len(text); i += 3 {
			c.Write([]byte(text[i:min(i+3, len(text))]))
		}
		got := c.String()
		for i := 0; i+8 <= len(secret); i++ {
			if strings.Contains(got, secret[i:i+8]) {
				t.Fatalf("secret cut %d bytes in: kept %q", at, got)
			}
		}
		if c.dropped != len(text)-100 || !strings.HasSuffix(got, "more bytes not kept]") {
			t.Fatalf("dropped %d, kept %q", c.dropped, got)
		}
	}
	c := &capped{max: 10}
	c.Write([]byte("0123456789abc"))
	if got := c.String(); got != "0123456789\n[3 more bytes not kept]" || c.dropped != 3 {
		t.Fatalf("without secrets: %q, %d", got, c.dropped)
	}
}
