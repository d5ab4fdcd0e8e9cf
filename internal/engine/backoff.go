package engine

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// backoff returns the delay before the next attempt after failedAttempts failures: exponential
// with full jitter (a uniform draw between zero and the exponential bound), capped by the
// policy's max_interval. A server's Retry-After wins when it asks for longer. It is never under
// a millisecond, the ledger's unit of time: a retry claimed in the millisecond of the failure
// would leave the run's history without an order between the failed attempt and the next one
// (operate.InCausalOrder).
func backoff(p domain.RetryPolicy, failedAttempts int, retryAfter time.Duration, rnd *rand.Rand) time.Duration {
	bound := float64(p.InitialInterval) * math.Pow(p.Multiplier, float64(max(failedAttempts-1, 0)))
	if bound > float64(p.MaxInterval) || math.IsInf(bound, 0) {
		bound = float64(p.MaxInterval)
	}
	d := time.Duration(rnd.Float64() * bound)
	if retryAfter > d {
		d = retryAfter
	}
	return max(d, time.Millisecond)
}
