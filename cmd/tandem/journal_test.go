package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/journal"
)

func TestDecodePayload(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ producer, payload, want string }{
		{"cache/users", `{"v":1,"keys":["42","7"]}`, "evict 42, 7"},
		{"cache/users", `{"v":1,"keys":["a b","x"]}`, `evict "a b", x`},
		{"cache/users", `{"v":1,"all":true}`, "evict all"},
		{"cache/users", `{"v":2,"sel":"x"}`, `cache record of format 2 (newer than this release reads): "{\"v\":2,\"sel\":\"x\"}"`},
		{"cache/users", `not json`, `"not json"`},
		{"app/x", `{"v":1,"all":true}`, `"{\"v\":1,\"all\":true}"`},
		{"app/x", "line\n", `"line\n"`},
		{"app/x", "\xff\x00\x01", "hex:ff0001"},
		{"app/x", "", `""`},
	} {
		require.Equal(t, c.want, decodePayload(c.producer, []byte(c.payload)), "%s %q", c.producer, c.payload)
	}
}

// TestShortenedPayloadUTF8 checks that a long payload is shortened at a
// character boundary, so that the table stays valid UTF-8.
func TestShortenedPayloadUTF8(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	p := &recordPrinter{w: &out}
	payload := strings.Repeat("é", 150) // 300 bytes; the quote puts byte 200 inside an é
	require.NoError(t, p.print([]journal.Record{{Revision: 1, NodeID: "web-1", Producer: "app/x", Payload: []byte(payload)}}))
	require.True(t, utf8.Valid(out.Bytes()), "%q", out.String())
	require.Contains(t, out.String(), `"`+strings.Repeat("é", 99)+"… (300 bytes)")
}

func TestJournalShowTail(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		ctx := context.Background()
		n := tg.node(t, "web-1")
		cache, err := cluster.NewCache[string, string](n, "users", cluster.CacheConfig[string]{})
		require.NoError(t, err)
		require.NoError(t, n.Start(ctx))
		_, err = cache.Invalidate(ctx, "42", "7")
		require.NoError(t, err)
		_, err = cache.InvalidateAll(ctx)
		require.NoError(t, err)
		_, err = n.Publish(ctx, "app/blob", []byte{0xff, 0x00, 0x10})
		require.NoError(t, err)
		head, err := n.Publish(ctx, "app/text", []byte("hello"))
		require.NoError(t, err)
		require.Equal(t, int64(4), head)

		out := tg.must(t, "journal", "show")
		require.Contains(t, out, "REVISION")
		require.Regexp(t, `1\s+\S+ \S+\s+web-1\s+cache/users\s+evict 42, 7`, out)
		require.Contains(t, out, "evict all")
		require.Contains(t, out, "hex:ff0010")
		require.Contains(t, out, `"hello"`)

		out = tg.must(t, "journal", "show", "--from", "2", "--limit", "2", "--json")
		var recs []recordJSON
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var r recordJSON
			require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
			recs = append(recs, r)
		}
		require.Len(t, recs, 2)
		require.Equal(t, int64(2), recs[0].Revision)
		require.Equal(t, "evict all", recs[0].Payload)
		require.Equal(t, "ff0010", recs[1].PayloadHex)
		require.Equal(t, "web-1", recs[1].Node)

		out = tg.must(t, "journal", "tail", "-n", "1")
		require.Contains(t, out, `"hello"`)
		require.NotContains(t, out, "evict")
		tg.fails(t, exitUsage, "journal", "show", "--limit", "0")
		tg.fails(t, exitUsage, "journal", "show", "extra")

		// tail -f prints what comes while it runs, and ends cleanly
		// when its context is cancelled.
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var buf syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(fctx, append([]string{"journal", "tail", "-f", "-n", "1", "--interval", "50ms"}, tg.global...), &buf, &buf, tg.getenv)
		}()
		require.Eventually(t, func() bool { return strings.Contains(buf.String(), `"hello"`) }, 30*time.Second, 10*time.Millisecond)
		_, err = cache.Invalidate(ctx, "99")
		require.NoError(t, err)
		require.Eventually(t, func() bool { return strings.Contains(buf.String(), "evict 99") }, 30*time.Second, 10*time.Millisecond)
		cancel()
		select {
		case code := <-done:
			require.Equal(t, 0, code, buf.String())
		case <-time.After(30 * time.Second):
			t.Fatal("journal tail -f did not end when its context was cancelled")
		}
		require.Equal(t, 1, strings.Count(buf.String(), "evict 99"))
	})
}
