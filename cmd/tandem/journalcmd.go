package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/journal"
)

// recordJSON is a record as journal show and tail print it.
type recordJSON struct {
	Revision int64     `json:"revision"`
	Time     time.Time `json:"time"`
	Node     string    `json:"node"`
	Instance string    `json:"instance,omitempty"`
	Producer string    `json:"producer"`
	// Payload is the payload's decoding (see decodePayload); PayloadHex
	// the raw bytes.
	Payload    string `json:"payload"`
	PayloadHex string `json:"payload_hex"`
	Size       int    `json:"size"`
}

// maxShown bounds a payload in a table row unless --full, in bytes.
const maxShown = 200

// Arguments of journal show and tail.
const (
	journalShowArgs = "[--from REV] [--limit N] [--full] [--json]"
	journalTailArgs = "[-f] [-n N] [--interval D] [--full] [--json]"
)

// shorten cuts s to at most maxShown bytes, at a character boundary.
func shorten(s string) string {
	if len(s) <= maxShown {
		return s
	}
	i := maxShown
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// decodePayload describes a record's payload: an invalidating cache's
// record (producer "cache/<name>", {"v":1,"keys":[…]} or {"v":1,"all":true};
// see cluster.Cache) as "evict 42, 7" or "evict all"; other UTF-8 text
// quoted; anything else in hex.
func decodePayload(producer string, p []byte) string {
	if strings.HasPrefix(producer, cluster.CacheProducerPrefix) {
		var r struct {
			V    int      `json:"v"`
			All  bool     `json:"all"`
			Keys []string `json:"keys"`
		}
		if err := json.Unmarshal(p, &r); err == nil && r.V >= 1 {
			switch {
			case r.V > 1:
				return fmt.Sprintf("cache record of format %d (newer than this release reads): %s", r.V, strconv.Quote(string(p)))
			case r.All:
				return "evict all"
			}
			keys := make([]string, len(r.Keys))
			for i, k := range r.Keys {
				keys[i] = quoteKey(k)
			}
			return "evict " + strings.Join(keys, ", ")
		}
	}
	if utf8.Valid(p) {
		return strconv.Quote(string(p))
	}
	return "hex:" + hex.EncodeToString(p)
}

// quoteKey quotes a cache key only when it needs it.
func quoteKey(k string) string {
	if k == "" || strings.ContainsAny(k, ", \"\\") || strconv.Quote(k) != `"`+k+`"` {
		return strconv.Quote(k)
	}
	return k
}

func toJSON(r journal.Record) recordJSON {
	return recordJSON{Revision: r.Revision, Time: r.Time.UTC(), Node: r.NodeID, Instance: r.Instance, Producer: r.Producer,
		Payload: decodePayload(r.Producer, r.Payload), PayloadHex: hex.EncodeToString(r.Payload), Size: len(r.Payload)}
}

// recordPrinter prints records as a table (flushed after every batch) or
// as JSON lines.
type recordPrinter struct {
	w      io.Writer
	json   bool
	full   bool
	header bool
}

func (p *recordPrinter) print(recs []journal.Record) error {
	if p.json {
		enc := json.NewEncoder(p.w)
		for _, r := range recs {
			if err := enc.Encode(toJSON(r)); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	if !p.header {
		fmt.Fprintln(tw, "REVISION\tTIME\tNODE\tPRODUCER\tPAYLOAD")
		p.header = true
	}
	for _, r := range recs {
		s := decodePayload(r.Producer, r.Payload)
		if !p.full && len(s) > maxShown {
			s = fmt.Sprintf("%s… (%d bytes)", shorten(s), len(r.Payload))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Revision, r.Time.UTC().Format("2006-01-02 15:04:05.000Z"), r.NodeID, r.Producer, s)
	}
	return tw.Flush()
}

func runJournalShow(ctx context.Context, e *env, args []string) error {
	fs := e.flags("journal show", journalShowArgs)
	from := fs.Int64("from", 0, "first revision to show (default: the tail, the oldest kept)")
	limit := fs.Int("limit", 100, "show at most N records")
	full := fs.Bool("full", false, "do not shorten long payloads")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *limit < 1 || *from < 0 {
		return usageError("--limit must be positive and --from not negative")
	}
	s, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	tail, err := s.j.Tail(ctx)
	if err != nil {
		return err
	}
	start := *from
	if start == 0 {
		start = tail
	} else if start < tail {
		return withCode(exitNotFound, "revision %d was pruned: the journal's tail is %d", start, tail)
	}
	p := &recordPrinter{w: e.stdout, json: e.g.json, full: *full}
	after, left := start-1, *limit
	for left > 0 {
		recs, err := s.j.Read(ctx, after, min(left, 1000))
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			break
		}
		if err := p.print(recs); err != nil {
			return err
		}
		after, left = recs[len(recs)-1].Revision, left-len(recs)
	}
	if !p.header && !p.json {
		head, err := s.j.Head(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "no records from revision %d (head %d, tail %d)\n", start, head, tail)
	}
	return nil
}

func runJournalTail(ctx context.Context, e *env, args []string) error {
	fs := e.flags("journal tail", journalTailArgs)
	follow := fs.Bool("f", false, "follow: print new records as they come, until interrupted")
	n := fs.Int64("n", 10, "print the last N records first")
	interval := fs.Duration("interval", time.Second, "with -f, how often to poll (push wake-ups come sooner where the store has them)")
	full := fs.Bool("full", false, "do not shorten long payloads")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *n < 0 || *interval <= 0 {
		return usageError("-n must not be negative and --interval must be positive")
	}
	// --timeout bounds the whole command, or with -f each step.
	step := e.stepper(*follow)
	var s *store
	var head, tail int64
	err := step(ctx, func(ctx context.Context) (err error) {
		if s, err = e.openStore(ctx); err != nil {
			return err
		}
		if head, err = s.j.Head(ctx); err != nil {
			return err
		}
		tail, err = s.j.Tail(ctx)
		return err
	})
	if s != nil {
		defer s.close()
	}
	if err != nil {
		return err
	}
	after := max(head-*n, tail-1)
	var wake <-chan struct{}
	if *follow && journal.Watchable(s.j) {
		if w, ok := s.j.(journal.Watcher); ok {
			if c, err := w.Watch(ctx); err == nil {
				wake = c
			}
		}
	}
	p := &recordPrinter{w: e.stdout, json: e.g.json, full: *full}
	for {
		var recs []journal.Record
		err := step(ctx, func(ctx context.Context) (err error) { recs, err = s.j.Read(ctx, after, 1000); return err })
		switch {
		case errors.Is(err, journal.ErrBehindTail) && *follow:
			var t int64
			terr := step(ctx, func(ctx context.Context) (err error) { t, err = s.j.Tail(ctx); return err })
			if terr != nil {
				return terr
			}
			fmt.Fprintf(e.stderr, "tandem: journal tail: records %d to %d were pruned before they could be shown\n", after+1, t-1)
			after = t - 1
			continue
		case err != nil:
			if *follow && ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(recs) > 0 {
			if err := p.print(recs); err != nil {
				return err
			}
			after = recs[len(recs)-1].Revision
			if len(recs) == 1000 {
				continue
			}
		}
		if !*follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(*interval):
		}
	}
}
