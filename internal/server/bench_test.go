package server_test

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/server"
)

// BenchmarkSubmitOverHTTP creates runs through POST /api/v1/pipelines/{name}/runs over
// loopback, as clients would: a bearer token, an Idempotency-Key, the input checked against
// its schema, one ledger commit per run. It reports runs created per second and the p50 and
// p99 latency of a request, with 8 clients at once.
func BenchmarkSubmitOverHTTP(b *testing.B) {
	for name, dsn := range ledgers(b) {
		b.Run(name, func(b *testing.B) {
			bb := setup(b, dsn(b), options{})
			tok := bb.tokens[server.RoleOperator]
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var n atomic.Int64
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			b.SetParallelism(8 / max(1, runtimeProcs()))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				local := make([]time.Duration, 0, 64)
				for pb.Next() {
					i := n.Add(1)
					body := fmt.Sprintf(`{"id": "bench-%d", "qty": 1}`, i)
					req, _ := http.NewRequest("POST", bb.url+"/api/v1/pipelines/orders/runs", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+tok)
					req.Header.Set("Idempotency-Key", fmt.Sprintf("bench-%d", i))
					t0 := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					local = append(local, time.Since(t0))
					if resp.StatusCode != http.StatusCreated {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			if len(lat) == 0 {
				return
			}
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "runs/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}
