package server

import (
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// FuzzCursor: a cursor from a client is untrusted; it must decode or fail, never panic, and
// every cursor this server issues must decode to the run it came from.
func FuzzCursor(f *testing.F) {
	f.Add("MTc2NDQ5NjAwMDAwMC4wMW04bnh5")
	f.Add("")
	f.Add("LQ")
	f.Fuzz(func(t *testing.T, c string) {
		if cur, err := decodeCursor(c); err == nil && cur.ID == "" {
			t.Fatalf("%q decoded to a cursor without an id", c)
		}
	})
}

func FuzzCursorRoundTrip(f *testing.F) {
	f.Add(int64(1764496000000), "01m8nxy")
	f.Add(int64(0), ".")
	f.Fuzz(func(t *testing.T, ms int64, id string) {
		if id == "" {
			return
		}
		r := &domain.Run{ID: id, CreatedAt: time.UnixMilli(ms)}
		cur, err := decodeCursor(encodeCursor(r))
		if err != nil || cur.ID != id || cur.CreatedAt.UnixMilli() != ms {
			t.Fatalf("%d %q: %v %+v", ms, id, err, cur)
		}
	})
}
