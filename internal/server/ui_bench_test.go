package server_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pipectl/pipectl/internal/server"
)

// BenchmarkDashboardPages renders each page of a ledger holding a held run, as a signed-in
// admin over loopback: ns/op is the server's time per page, page-bytes its HTML and
// asset-bytes the stylesheet and script every page loads (cached after the first).
func BenchmarkDashboardPages(b *testing.B) {
	bn := setup(b, ledgers(b)["sqlite"](b), options{})
	id := bn.pausedOrder("bench-1")
	br := bn.browser()
	br.signIn(server.RoleAdmin)
	assets := 0
	for _, a := range []string{"/assets/app.css", "/assets/app.js"} {
		_, body := br.get(a)
		assets += len(body)
	}
	for _, pg := range []struct{ name, path string }{{"runs", "/"}, {"run", "/runs/" + id}, {"inbox", "/inbox"}, {"dlq", "/dlq"}, {"pipelines", "/pipelines"}} {
		page := pg.path
		b.Run(pg.name, func(b *testing.B) {
			size := 0
			for b.Loop() {
				resp, body := br.get(page)
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", page, resp.StatusCode)
				}
				size = len(body)
			}
			b.ReportMetric(float64(size), "page-bytes")
			b.ReportMetric(float64(assets), "asset-bytes")
		})
	}
}

// BenchmarkDashboardFirstRender loads a held run's page in headless Chromium: first-paint-ms
// is the browser's first contentful paint after navigation (HTML, stylesheet and script
// fetched over loopback).
func BenchmarkDashboardFirstRender(b *testing.B) {
	bn := setup(b, ledgers(b)["sqlite"](b), options{})
	id := bn.pausedOrder("bench-1")
	ctx := newChromeTB(b)
	bn.signInChromeTB(b, ctx, server.RoleAdmin)
	var total float64
	n := 0
	for b.Loop() {
		if err := chromedp.Do(ctx, chromedp.Navigate(bn.url+"/runs/"+id), chromedp.WaitVisible(css("#state"))); err != nil {
			b.Fatal(err)
		}
		var fcp float64
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`(performance.getEntriesByName("first-contentful-paint")[0] || {startTime: -1}).startTime`))
			if err == nil && v >= 0 {
				fcp = v
				break
			}
		}
		total += fcp
		n++
	}
	b.ReportMetric(total/float64(n), "first-paint-ms")
}
