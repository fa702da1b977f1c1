package dbtest

import (
	"io"
	"net"
	"net/url"
	"regexp"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a test database, and can cut them all
// to simulate an outage (a server restart, a network partition) for the
// pools that go through it, without disturbing other tests. It can also
// black-hole them: connections stay open and accept what is sent, but
// nothing reaches the other side — a partition that drops packets, where
// calls hang instead of failing.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	hole  bool                  // forward nothing; guarded by mu
	holed map[net.Conn]struct{} // connections open during a black hole: their streams lost bytes
	// wedged connections forward nothing, for good, while new ones work
	// (Wedge).
	wedged map[net.Conn]struct{}
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

var mysqlAddr = regexp.MustCompile(`@tcp\(([^)]*)\)`)

// NewProxy starts a proxy in front of d's server and returns it with a DSN
// that goes through it. It stops when t ends.
func (d *DB) NewProxy(t testing.TB) (*Proxy, string) {
	t.Helper()
	var target, dsn string
	if d.Name == "mysql" {
		m := mysqlAddr.FindStringSubmatch(d.DSN)
		if m == nil {
			t.Fatalf("%s: no tcp(host:port) in the DSN", d.Name)
		}
		target = m[1]
	} else {
		u, err := url.Parse(d.DSN)
		if err != nil {
			t.Fatalf("%s: parse DSN: %v", d.Name, err)
		}
		target = u.Host
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if d.Name == "mysql" {
		dsn = mysqlAddr.ReplaceAllLiteralString(d.DSN, "@tcp("+ln.Addr().String()+")")
	} else {
		u, _ := url.Parse(d.DSN)
		u.Host = ln.Addr().String()
		dsn = u.String()
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, holed: map[net.Conn]struct{}{}, wedged: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p, dsn
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		if p.hole {
			// Accept, then never answer.
			p.conns[c], p.holed[c] = struct{}{}, struct{}{}
			p.wg.Add(1)
			p.mu.Unlock()
			go p.pipe(io.Discard, c)
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) pipe(dst io.Writer, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf) // ends when either side closes or is cut
		if n > 0 && !p.dropping(src) {
			if _, err := dst.Write(buf[:n]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	src.Close()
	p.mu.Lock()
	delete(p.conns, src)
	delete(p.holed, src)
	delete(p.wedged, src)
	if c, ok := dst.(net.Conn); ok {
		c.Close()
		delete(p.conns, c)
		delete(p.holed, c)
		delete(p.wedged, c)
	}
	p.mu.Unlock()
}

// dropping reports whether what src sends is to be dropped.
func (p *Proxy) dropping(src net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, wedged := p.wedged[src]
	return p.hole || wedged
}

// Wedge black-holes the connections open now, for good, and forwards new
// ones as before: a middlebox (a NAT, a firewall, a load balancer that
// failed over) that lost the state of established flows and drops their
// packets without a reset, while new connections work. Calls on a wedged
// connection hang until their own deadlines; the client sees the
// connection close only when it gives up on it.
func (p *Proxy) Wedge() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		p.wedged[c] = struct{}{}
	}
}

// BlackHole stops forwarding: open connections stay open, but what either
// side sends is dropped, and new connections are accepted and never
// answered. Calls through the proxy hang until their own deadlines.
// Restore ends it.
func (p *Proxy) BlackHole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hole = true
	for c := range p.conns {
		p.holed[c] = struct{}{}
	}
}

// Cut closes every connection through the proxy and refuses new ones
// until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore accepts and forwards connections again. Connections that were
// open during a black hole are closed: their streams lost bytes.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.down, p.hole = false, false
	for c := range p.holed {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}
