package main

import (
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// cutProxy is a TCP proxy between the workers and PostgreSQL that can cut any connection
// through it: both sides are closed at once, the client's with a reset.
type cutProxy struct {
	l       net.Listener
	backend string
	mu      sync.Mutex
	conns   map[int][2]net.Conn
	next    int
}

func newCutProxy(t *testing.T, backend string) *cutProxy {
	return newCutProxyAt(t, "127.0.0.1:0", backend)
}

func newCutProxyAt(t *testing.T, addr, backend string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, backend: backend, conns: map[int][2]net.Conn{}}
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c[0].Close()
			c[1].Close()
		}
	})
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.backend)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		id := p.next
		p.next++
		p.conns[id] = [2]net.Conn{client, server}
		p.mu.Unlock()
		done := func() {
			p.mu.Lock()
			delete(p.conns, id)
			p.mu.Unlock()
			client.Close()
			server.Close()
		}
		go func() { io.Copy(server, client); done() }()
		go func() { io.Copy(client, server); done() }()
	}
}

// cut closes one connection chosen at random; it reports whether there was one.
func (p *cutProxy) cut(rnd *rand.Rand) bool {
	p.mu.Lock()
	ids := make([]int, 0, len(p.conns))
	for id := range p.conns {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		p.mu.Unlock()
		return false
	}
	c := p.conns[ids[rnd.IntN(len(ids))]]
	p.mu.Unlock()
	if tcp, ok := c[0].(*net.TCPConn); ok {
		tcp.SetLinger(0) // a reset, as a middlebox that drops the connection sends
	}
	c[0].Close()
	c[1].Close()
	return true
}

// through rewrites a PostgreSQL DSN to connect through the proxy.
func (p *cutProxy) through(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.l.Addr().String()
	return u.String()
}

// TestFaultDroppedConnections runs the drain of TestFaultPostgresRestart through a proxy that
// cuts connections between the workers and PostgreSQL at random (the pool's, the LISTEN
// connection, in the middle of a transaction or at rest), with the same assertions.
func TestFaultDroppedConnections(t *testing.T) {
	sz := faultForm(t)
	dsn := postgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	d := startPGDrain(t, dsn, proxy.through(t, dsn), sz.proxyRuns)
	rnd := rand.New(rand.NewPCG(23, uint64(time.Now().UnixNano())))
	cuts := 0
	var lastCut time.Time
	for cuts < sz.proxyCuts {
		// Cuts come every 5-50 ms: since the drain got faster (issue 16) one every 20-140 ms
		// let a 1,000-run drain end before the long form's hundredth cut.
		time.Sleep(time.Duration(5+rnd.IntN(45)) * time.Millisecond)
		if c := ledgerCounts(d.store); c["succeeded"]+c["failed_permanent"] >= d.runs-20 {
			t.Fatalf("the drain was nearly over after %d of %d cuts (%v): more runs are needed", cuts, sz.proxyCuts, c)
		}
		if proxy.cut(rnd) {
			cuts++
			lastCut = time.Now()
		}
	}
	summary := d.finish(t, lastCut)
	t.Logf("form %s: %d connections cut at random; %s", sz.form, cuts, summary)
}
