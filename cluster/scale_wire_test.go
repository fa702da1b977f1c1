package cluster_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Counting the statements a database server receives, for BenchmarkScale.
//
// The pools a scale benchmark gives its nodes dial through a net.Conn
// wrapper that reads the client-to-server byte stream of the wire protocol
// (nothing is changed or delayed) and counts:
//
//   - PostgreSQL: every simple-protocol Query message ('Q', which is also
//     how pgx pings: "-- ping"), every extended-protocol Execute ('E'), and
//     every Sync ('S') that closes a round trip without an Execute (a
//     prepare: Parse, Describe, Sync). For database/sql's use of pgx this is
//     one count per client round trip, BEGIN and COMMIT included.
//   - MySQL/MariaDB: every command packet (sequence number 0) except
//     COM_QUIT and COM_STMT_CLOSE, which get no answer: COM_QUERY,
//     COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_PING, … — again one count per
//     round trip. A statement with arguments is a prepare and an execute
//     (two) unless the caller keeps the prepared statement.
//
// Counting on the wire, rather than wrapping the driver.Conn, leaves the
// driver's own connection type in place: the PostgreSQL dialect reaches
// pgx through sql.Conn.Raw to LISTEN, and a wrapper would break it.
//
// Each count carries a label (the statement's text, whitespace collapsed,
// the benchmark's table prefix shown as "tandem_") so that a run can say
// which statements an idle node sends.

// wireStats accumulates the counts of every connection of a set of pools.
type wireStats struct {
	prefix string // replaced by "tandem_" in labels
	total  atomic.Int64
	dials  atomic.Int64 // connections opened
	mu     sync.Mutex
	labels map[string]int64
}

func newWireStats(prefix string) *wireStats {
	return &wireStats{prefix: prefix, labels: map[string]int64{}}
}

func (s *wireStats) count(label string) {
	s.total.Add(1)
	s.mu.Lock()
	s.labels[label]++
	s.mu.Unlock()
}

// snapshot returns the counts by label so far.
func (s *wireStats) snapshot() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int64, len(s.labels))
	for k, v := range s.labels {
		m[k] = v
	}
	return m
}

// labelCount is one label's count over a window.
type labelCount struct {
	label string
	n     int64
}

// diff returns the counts by label between two snapshots, largest first.
func diffLabels(before, after map[string]int64) []labelCount {
	var out []labelCount
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out = append(out, labelCount{k, d})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].n != out[j].n {
			return out[i].n > out[j].n
		}
		return out[i].label < out[j].label
	})
	return out
}

func (s *wireStats) label(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	if s.prefix != "" {
		q = strings.ReplaceAll(q, s.prefix, "tandem_")
	}
	if len(q) > 110 {
		q = q[:110] + "…"
	}
	return q
}

// countingConn counts what parsers find in the bytes written to it (and,
// if read is set, read from it).
type countingConn struct {
	net.Conn
	write, read func([]byte)
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.write(p[:n])
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.read != nil {
		c.read(p[:n])
	}
	return n, err
}

// maxBody is how much of a message's body the parsers keep (enough for a
// label).
const maxBody = 4096

// pgParser follows the PostgreSQL frontend protocol on one connection.
type pgParser struct {
	s       *wireStats
	started bool // the startup message went by
	inBody  bool // hdr is complete, left bytes of body to come
	hdr     []byte
	left    int // body bytes still to come
	typ     byte
	body    []byte
	names   map[string]string // prepared statement name → text
	bound   string            // the statement of the last Bind
	parsed  string            // the text of the last Parse
	execs   int               // Executes since the last Sync
}

func (p *pgParser) write(b []byte) {
	for len(b) > 0 {
		if !p.inBody {
			want := 5
			if !p.started {
				want = 4 // startup, SSL and GSS requests have no type byte
			}
			k := min(want-len(p.hdr), len(b))
			p.hdr = append(p.hdr, b[:k]...)
			b = b[k:]
			if len(p.hdr) < want {
				return
			}
			p.typ = 0
			if p.started {
				p.typ = p.hdr[0]
			}
			p.left = int(binary.BigEndian.Uint32(p.hdr[want-4:])) - 4
			p.hdr = p.hdr[:0]
			p.body = p.body[:0]
			if p.left <= 0 {
				p.left = 0
				p.done()
				continue
			}
			p.inBody = true
		}
		k := min(p.left, len(b))
		if room := maxBody - len(p.body); room > 0 {
			p.body = append(p.body, b[:min(k, room)]...)
		}
		b = b[k:]
		p.left -= k
		if p.left == 0 {
			p.inBody = false
			p.done()
		}
	}
}

// cstrings splits a body into its leading NUL-terminated strings.
func cstrings(b []byte, n int) []string {
	var out []string
	for range n {
		i := strings.IndexByte(string(b), 0)
		if i < 0 {
			out = append(out, string(b))
			return out
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	return out
}

func (p *pgParser) done() {
	switch p.typ {
	case 0: // startup (or an SSL/GSS request, after which another comes)
		if len(p.body) >= 4 {
			code := binary.BigEndian.Uint32(p.body)
			p.started = code != 80877103 && code != 80877104
		}
	case 'Q':
		p.s.count(p.s.label(strings.TrimRight(string(p.body), "\x00")))
	case 'P':
		f := cstrings(p.body, 2)
		if len(f) == 2 {
			if p.names == nil {
				p.names = map[string]string{}
			}
			p.names[f[0]] = f[1]
			p.parsed = f[1]
		}
	case 'B':
		if f := cstrings(p.body, 2); len(f) == 2 {
			p.bound = p.names[f[1]]
		}
	case 'E':
		p.execs++
		p.s.count(p.s.label(p.bound))
	case 'S':
		if p.execs == 0 {
			p.s.count(p.s.label("prepare: " + p.parsed))
		}
		p.execs = 0
	}
}

// myPackets splits one direction of a MySQL connection into packets:
// 3-byte length, sequence number, payload (of which it keeps maxBody).
type myPackets struct {
	inBody bool
	hdr    []byte
	left   int
	seq    byte
	body   []byte
	packet func(seq byte, body []byte)
}

func (p *myPackets) write(b []byte) {
	for len(b) > 0 {
		if !p.inBody {
			k := min(4-len(p.hdr), len(b))
			p.hdr = append(p.hdr, b[:k]...)
			b = b[k:]
			if len(p.hdr) < 4 {
				return
			}
			p.left = int(p.hdr[0]) | int(p.hdr[1])<<8 | int(p.hdr[2])<<16
			p.seq = p.hdr[3]
			p.hdr = p.hdr[:0]
			p.body = p.body[:0]
			if p.left == 0 {
				p.packet(p.seq, p.body)
				continue
			}
			p.inBody = true
		}
		k := min(p.left, len(b))
		if room := maxBody - len(p.body); room > 0 {
			p.body = append(p.body, b[:min(k, room)]...)
		}
		b = b[k:]
		p.left -= k
		if p.left == 0 {
			p.inBody = false
			p.packet(p.seq, p.body)
		}
	}
}

// myParser follows the MySQL client protocol on one connection: the
// commands it writes, and the statement ids in the server's answers to
// COM_STMT_PREPARE (to label later executes).
type myParser struct {
	s         *wireStats
	out, in   myPackets
	mu        sync.Mutex // the reader and the writer may be different goroutines
	preparing string     // the text of a prepare awaiting its answer
	ids       map[uint32]string
}

func newMyParser(s *wireStats) *myParser {
	p := &myParser{s: s, ids: map[uint32]string{}}
	p.out.packet, p.in.packet = p.command, p.answer
	return p
}

func (p *myParser) command(seq byte, body []byte) {
	if seq != 0 || len(body) == 0 {
		return // not a command (handshake, auth, continued packets)
	}
	switch cmd := body[0]; cmd {
	case 0x01, 0x19: // COM_QUIT, COM_STMT_CLOSE: no answer
	case 0x03: // COM_QUERY
		p.s.count(p.s.label(string(body[1:])))
	case 0x16: // COM_STMT_PREPARE
		p.mu.Lock()
		p.preparing = string(body[1:])
		p.mu.Unlock()
		p.s.count(p.s.label("prepare: " + string(body[1:])))
	case 0x17: // COM_STMT_EXECUTE
		label := "(execute)"
		if len(body) >= 5 {
			p.mu.Lock()
			if q, ok := p.ids[binary.LittleEndian.Uint32(body[1:5])]; ok {
				label = q
			}
			p.mu.Unlock()
		}
		p.s.count(p.s.label(label))
	case 0x0e:
		p.s.count("(ping)")
	default:
		p.s.count(fmt.Sprintf("(command 0x%02x)", cmd))
	}
}

// answer notes the statement id of a COM_STMT_PREPARE_OK (the first packet
// of the answer: 0x00, then the id).
func (p *myParser) answer(seq byte, body []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.preparing == "" || seq != 1 || len(body) == 0 {
		return
	}
	if body[0] == 0x00 && len(body) >= 5 {
		p.ids[binary.LittleEndian.Uint32(body[1:5])] = p.preparing
	}
	p.preparing = ""
}

// openCountedPool opens a pool on dsn for driver ("pgx" or "mysql") with
// the driver's defaults and database/sql's default pool settings, whose
// connections count into s.
func openCountedPool(driver, dsn string, s *wireStats) (*sql.DB, error) {
	var d net.Dialer
	switch driver {
	case "pgx":
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			s.dials.Add(1)
			p := &pgParser{s: s}
			return &countingConn{Conn: c, write: p.write}, nil
		}
		return stdlib.OpenDB(*cfg), nil
	case "mysql":
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, err
		}
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			s.dials.Add(1)
			p := newMyParser(s)
			return &countingConn{Conn: c, write: p.out.write, read: p.in.write}, nil
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, err
		}
		return sql.OpenDB(conn), nil
	}
	return nil, fmt.Errorf("no statement counter for driver %q", driver)
}
