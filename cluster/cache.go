package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/journal"
)

// DefaultCacheSize is the number of entries a Cache holds when
// CacheConfig.Size is zero.
const DefaultCacheSize = 10_000

// CacheProducerPrefix prefixes a cache's name to make the producer of its
// invalidation records: the records of cache "users" are "cache/users".
const CacheProducerPrefix = "cache/"

// cacheFormat is the version of the invalidation records this release
// writes and the newest it reads.
const cacheFormat = 1

// cacheRecordSize is the payload size an invalidation record is filled up
// to (a record holds at least one key, so one with a long key that needs
// much escaping may be larger, but stays far below journal.MaxPayloadSize).
// Small records keep the memory of a reader's batch small.
const cacheRecordSize = 64 << 10

// CacheConfig configures a Cache. The zero value of each field means its
// default.
type CacheConfig[K comparable] struct {
	// Size is the most entries the cache holds; adding one more evicts
	// the least recently used. Defaults to DefaultCacheSize.
	Size int
	// Keys encodes keys into invalidation records and decodes them from
	// the records of other nodes. Defaults, for keys whose underlying
	// type is a string or an integer, to the key itself or its decimal
	// form; required for any other key type (see KeyFuncs).
	Keys KeyCodec[K]
}

// CacheStats are a cache's counters since it was made.
type CacheStats struct {
	Len        int   // entries held now
	Hits       int64 // lookups (Get, GetOrLoad) that found the key
	Misses     int64 // lookups that did not
	Loads      int64 // load functions GetOrLoad ran (concurrent misses share one)
	StaleLoads int64 // loads not stored: the key was invalidated (or Added) meanwhile
	Evictions  int64 // entries dropped to make room (Size too small if high)
	// Invalidations counts the invalidation records of other nodes this
	// cache applied.
	Invalidations int64
	// Flushes counts how often the whole cache was dropped: Purge,
	// InvalidateAll here or on another node, a resync, or an unreadable
	// record.
	Flushes int64
	// Unreadable counts invalidation records this node could not read (a
	// newer format, a malformed payload, a key its codec rejects), each
	// answered by a flush.
	Unreadable int64
}

// Cache is a local LRU cache (github.com/hashicorp/golang-lru/v2) that
// stays consistent with the caches of the same name on other nodes: when
// the source of a value changes, Invalidate evicts its key here and
// publishes a record, and every other node evicts the key when it applies
// that record.
//
// The usual pattern: read through GetOrLoad; after changing the source
// (committing the database transaction), call Invalidate with the keys it
// touched and hand the returned revision to the client for read-your-writes
// (Node.WaitFor on whichever replica serves its next request).
//
// # The stale-load race
//
// A load that reads the source before a change but finishes after the
// invalidation arrived would put the old value back into the cache, where
// no further invalidation would ever remove it. GetOrLoad prevents this:
// every invalidation of a key (from this node or another, or a flush)
// detaches the loads of that key in flight. A detached load still returns
// its value to its callers, whose calls overlapped the invalidation, but
// does not store it, and callers that arrive after the invalidation start a
// new load instead of joining the old one. Add has no such guard: it stores
// unconditionally, so use it only for values known to be current.
//
// # Delivery and failures
//
// Invalidations reach other nodes at least once and in order (a key may be
// evicted twice, which is harmless). A node does not receive its own
// records (it evicted the keys before publishing them; with
// Config.DeliverOwn it evicts them again, harmlessly). A node that
// resynchronises (its position was pruned, or the journal's epoch changed)
// missed records, so its caches flush themselves.
//
// A record this node cannot read never blocks the node and is never
// skipped silently: the cache flushes itself, logs a warning and counts it
// (CacheStats.Unreadable), since invalidating more than asked is always
// safe. This covers records written by a newer release during a rolling
// upgrade, malformed payloads, and keys the codec cannot decode (even one
// whose Decode panics).
//
// # Record format
//
// The payload of a record of producer "cache/<name>" is a JSON object:
//
//	{"v":1,"keys":["42","7"]}   evict these keys (encoded by the KeyCodec)
//	{"v":1,"all":true}          evict everything
//
// "v" is the format version. Readers ignore fields they do not know, so a
// later release may add fields that older nodes can safely ignore without
// changing "v"; any change that older nodes would misread (a new way of
// selecting keys, say) needs a new version, which older nodes answer by
// flushing. A release that introduces a new version should read it but keep
// writing the old one until every node runs that release.
//
// A cache is only as fresh as its node: before Start and after Stop it
// hears no invalidations; drop it with its node. While its node is not a
// member — its membership lease could not be confirmed in time (the store
// did not answer), it was replaced by another process with its id, or it
// stopped — the cache flushes itself and neither serves nor keeps values
// (Get misses, GetOrLoad loads without storing, Add does nothing), since
// it may have missed invalidations; Invalidate fails like Node.Publish.
//
// Methods are safe for concurrent use. Values are shared, not copied:
// callers must not modify a value they got from the cache.
type Cache[K comparable, V any] struct {
	name     string
	producer string
	node     *Node
	keys     KeyCodec[K]

	mu      sync.Mutex // guards everything below, and orders stores after invalidations
	lru     *simplelru.LRU[K, V]
	flights map[K]*flight[V] // loads in flight, until stored or detached
	st      CacheStats
}

// flight is one load shared by the GetOrLoad calls of one key.
type flight[V any] struct {
	done chan struct{} // closed when val and err are set
	val  V
	err  error
	// abandoned: the load failed because its caller's context ended;
	// the calls that joined it load again.
	abandoned bool
}

// NewCache makes a cache named name on node n: it registers the handler
// for the cache's records (producer "cache/"+name) and a resync hook that
// flushes it. Like Node.Handle, it must be called before n.Start, and a
// name can be used once per node. The caches of one name on all nodes form
// one invalidation domain; give each kind of value its own name.
//
// Populate the cache after n.Start: a node that starts without a stored
// position starts at the journal's head and does not apply older records.
func NewCache[K comparable, V any](n *Node, name string, cfg CacheConfig[K]) (*Cache[K, V], error) {
	if n == nil {
		return nil, fmt.Errorf("new cache %q: %w: node is nil", name, ErrInvalidArgument)
	}
	if err := checkCacheName(name); err != nil {
		return nil, fmt.Errorf("new cache: %w: %w", ErrInvalidArgument, err)
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultCacheSize
	}
	if cfg.Keys == nil {
		cfg.Keys = defaultKeys[K]()
	}
	switch {
	case cfg.Size < 0:
		return nil, fmt.Errorf("new cache %q: %w: Size is %d, must be > 0 (or 0 for DefaultCacheSize)", name, ErrInvalidArgument, cfg.Size)
	case cfg.Keys == nil:
		return nil, fmt.Errorf("new cache %q: %w: Keys is required for key type %v (the default codec covers string and integer types)", name, ErrInvalidArgument, reflect.TypeFor[K]())
	}
	l, err := simplelru.NewLRU[K, V](cfg.Size, nil)
	if err != nil {
		return nil, fmt.Errorf("new cache %q: %w: Size: %w", name, ErrInvalidArgument, err)
	}
	c := &Cache[K, V]{name: name, producer: CacheProducerPrefix + name, node: n, keys: cfg.Keys,
		lru: l, flights: map[K]*flight[V]{}}
	if err := n.Handle(c.producer, HandlerFunc(c.apply)); err != nil {
		return nil, fmt.Errorf("new cache %q: %w", name, err)
	}
	if err := n.OnResync(c.resync); err != nil {
		return nil, fmt.Errorf("new cache %q: %w", name, err)
	}
	n.onMembershipLost(c.Purge)
	return c, nil
}

// checkCacheName validates a cache name: what ident.Producer allows, short
// enough that "cache/"+name is a valid producer.
func checkCacheName(name string) error {
	if max := ident.MaxProducerLen - len(CacheProducerPrefix); len(name) > max {
		return &ident.InvalidError{Field: "name", Value: name[:80] + "…", Reason: fmt.Sprintf("longer than %d bytes", max)}
	}
	return ident.Producer("name", name)
}

// Name returns the cache's name.
func (c *Cache[K, V]) Name() string { return c.name }

// Producer returns the producer of the cache's records, "cache/"+name.
func (c *Cache[K, V]) Producer() string { return c.producer }

// Get returns the value cached for key, if any, and marks it recently
// used.
func (c *Cache[K, V]) Get(key K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.node.serving() {
		var zero V
		c.st.Misses++
		return zero, false
	}
	return c.lookup(key)
}

func (c *Cache[K, V]) lookup(key K) (V, bool) {
	v, ok := c.lru.Get(key)
	if ok {
		c.st.Hits++
	} else {
		c.st.Misses++
	}
	return v, ok
}

// Add caches value for key on this node only, unconditionally; a load of
// key in flight will not overwrite it. Prefer GetOrLoad for values read
// from a shared source: Add cannot tell whether value was invalidated
// while the caller was reading it.
func (c *Cache[K, V]) Add(key K, value V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.detach(key)
	if c.node.serving() {
		c.store(key, value)
	}
}

func (c *Cache[K, V]) store(key K, value V) {
	if c.lru.Add(key, value) {
		c.st.Evictions++
	}
}

// GetOrLoad returns the value cached for key, or loads, caches and returns
// it. Concurrent calls for one key share one load. The load runs with the
// ctx of the call that started it; if that ctx ends and the load fails,
// the calls that joined it load again. A load that fails is not cached,
// and its error is returned, as is, to every call that shared it. If key is
// invalidated while the load runs, its value is returned but not cached
// (see the stale-load race in the type's documentation).
func (c *Cache[K, V]) GetOrLoad(ctx context.Context, key K, load func(ctx context.Context, key K) (V, error)) (V, error) {
	var zero V
	if load == nil {
		return zero, fmt.Errorf("cache %q: get or load: %w: load is nil", c.name, ErrInvalidArgument)
	}
	if !c.node.serving() {
		// Not a member now: it may have missed invalidations, so it
		// neither serves nor keeps values.
		c.mu.Lock()
		c.st.Misses++
		c.st.Loads++
		c.mu.Unlock()
		return load(ctx, key)
	}
	c.mu.Lock()
	v, ok := c.lookup(key)
	for {
		if ok {
			c.mu.Unlock()
			return v, nil
		}
		f := c.flights[key]
		if f == nil {
			f = &flight[V]{done: make(chan struct{})}
			c.flights[key] = f
			c.st.Loads++
			c.mu.Unlock()
			c.run(ctx, key, f, load)
			return f.val, f.err
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return zero, fmt.Errorf("cache %q: get or load: %w", c.name, ctx.Err())
		}
		if !f.abandoned {
			return f.val, f.err
		}
		c.mu.Lock()
		v, ok = c.lru.Get(key)
	}
}

// run runs the load of flight f and stores its value unless an
// invalidation detached f meanwhile. It completes f even if load panics.
func (c *Cache[K, V]) run(ctx context.Context, key K, f *flight[V], load func(context.Context, K) (V, error)) {
	finished := false
	defer func() {
		if !finished {
			f.err = fmt.Errorf("cache %q: load of key %v panicked", c.name, key)
		}
		c.mu.Lock()
		switch {
		case c.flights[key] != f:
			if f.err == nil {
				c.st.StaleLoads++
			}
		default:
			delete(c.flights, key)
			if f.err == nil {
				c.store(key, f.val)
			}
		}
		c.mu.Unlock()
		close(f.done)
	}()
	f.val, f.err = load(ctx, key)
	f.abandoned = f.err != nil && ctx.Err() != nil
	finished = true
}

// detach makes the load of key in flight, if any, not store its value,
// and makes later calls start a new load. c.mu must be held.
func (c *Cache[K, V]) detach(key K) {
	delete(c.flights, key)
}

// evict drops keys and detaches their loads in flight.
func (c *Cache[K, V]) evict(keys []K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.lru.Remove(k)
		c.detach(k)
	}
}

// Purge drops every entry on this node only, and detaches every load in
// flight. Other nodes keep theirs; see InvalidateAll.
func (c *Cache[K, V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Purge()
	clear(c.flights)
	c.st.Flushes++
}

// Len returns the number of entries cached.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Stats returns the cache's counters.
func (c *Cache[K, V]) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Len = c.lru.Len()
	return st
}

// Invalidate evicts keys on this node, then publishes a record that makes
// every other node evict them, and returns the record's revision: once a
// node's WaitFor(rev) returned, that node no longer holds the old values.
// Call it after the change to the source is committed. With no keys it
// does nothing and returns 0.
//
// Each encoded key must be valid UTF-8 and at most MaxCacheKeyLen bytes.
// Many keys are split over several records of one atomic append; a set
// beyond journal.MaxAppendSize (about 8 MiB of keys) takes several appends,
// in order, and the revision returned is the last one. On error, the keys
// are evicted here but possibly not elsewhere: retry (invalidating twice is
// harmless).
func (c *Cache[K, V]) Invalidate(ctx context.Context, keys ...K) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	entries, err := c.records(keys)
	if err != nil {
		return 0, fmt.Errorf("cache %q: invalidate: %w", c.name, err)
	}
	c.evict(keys)
	rev, err := c.publish(ctx, entries)
	if err != nil {
		return 0, fmt.Errorf("cache %q: invalidate: %w", c.name, err)
	}
	return rev, nil
}

// InvalidateAll purges the cache on this node, then publishes a record
// that makes every other node purge theirs, and returns its revision (see
// Invalidate).
func (c *Cache[K, V]) InvalidateAll(ctx context.Context) (int64, error) {
	c.Purge()
	rev, err := c.publish(ctx, []journal.Entry{{Producer: c.producer, Payload: allPayload}})
	if err != nil {
		return 0, fmt.Errorf("cache %q: invalidate all: %w", c.name, err)
	}
	return rev, nil
}

var (
	allPayload  = []byte(`{"v":` + strconv.Itoa(cacheFormat) + `,"all":true}`)
	keysHeader  = `{"v":` + strconv.Itoa(cacheFormat) + `,"keys":[`
	keysTrailer = `]}`
)

// records encodes keys into as few records as cacheRecordSize allows.
func (c *Cache[K, V]) records(keys []K) ([]journal.Entry, error) {
	var entries []journal.Entry
	buf := []byte(keysHeader)
	inBuf := 0
	flush := func() {
		buf = append(buf, keysTrailer...)
		entries = append(entries, journal.Entry{Producer: c.producer, Payload: buf})
		buf, inBuf = []byte(keysHeader), 0
	}
	for i, k := range keys {
		s := c.keys.Encode(k)
		switch {
		case len(s) > MaxCacheKeyLen:
			return nil, fmt.Errorf("%w: keys[%d] encodes to %d bytes, the limit is %d (MaxCacheKeyLen)", ErrInvalidArgument, i, len(s), MaxCacheKeyLen)
		case !utf8.ValidString(s):
			return nil, fmt.Errorf("%w: keys[%d] encodes to invalid UTF-8 %q; make the KeyCodec encode binary keys as hex or base64", ErrInvalidArgument, i, s)
		}
		q, err := json.Marshal(s)
		if err != nil {
			return nil, err // unreachable for a valid UTF-8 string
		}
		if inBuf > 0 && len(buf)+1+len(q)+len(keysTrailer) > cacheRecordSize {
			flush()
		}
		if inBuf > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, q...)
		inBuf++
	}
	flush()
	return entries, nil
}

// publish appends entries in as few atomic appends as the journal's
// limits allow and returns the last revision.
func (c *Cache[K, V]) publish(ctx context.Context, entries []journal.Entry) (int64, error) {
	if len(entries) == 1 {
		return c.node.Publish(ctx, c.producer, entries[0].Payload)
	}
	var last int64
	for len(entries) > 0 {
		n, size := 0, 0
		for n < len(entries) && n < journal.MaxAppendEntries && size+len(entries[n].Payload) <= journal.MaxAppendSize {
			size += len(entries[n].Payload)
			n++
		}
		revs, err := c.node.PublishEntries(ctx, entries[:n]...)
		if err != nil {
			return 0, err
		}
		last = revs[len(revs)-1]
		entries = entries[n:]
	}
	return last, nil
}

// cacheRecord is the payload of an invalidation record.
type cacheRecord struct {
	V    int             `json:"v"`
	All  bool            `json:"all"`
	Keys json.RawMessage `json:"keys"`
}

// apply is the cache's handler for the records of other nodes. It never
// fails: what it cannot read, it answers by flushing.
func (c *Cache[K, V]) apply(_ context.Context, rec journal.Record) error {
	keys, all, err := c.decode(rec.Payload)
	if err != nil {
		c.mu.Lock()
		c.st.Unreadable++
		count := c.st.Unreadable
		c.mu.Unlock()
		c.Purge()
		// A rolling upgrade can bring many: log the 1st, 2nd, 4th, 8th, …
		if count&(count-1) == 0 {
			c.node.cfg.Logger.Warn("tandem: cache flushed: unreadable invalidation record",
				"node", c.node.cfg.NodeID, "cache", c.name, "revision", rec.Revision, "from", rec.NodeID,
				"unreadable", count, "err", err)
		}
		return nil
	}
	if all {
		c.Purge()
	} else {
		c.evict(keys)
	}
	c.mu.Lock()
	c.st.Invalidations++
	c.mu.Unlock()
	return nil
}

// decode reads an invalidation record's payload.
func (c *Cache[K, V]) decode(payload []byte) (keys []K, all bool, err error) {
	var r cacheRecord
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, false, fmt.Errorf("malformed payload: %w", err)
	}
	switch {
	case r.V > cacheFormat:
		return nil, false, fmt.Errorf("format version %d is newer than this release reads (%d)", r.V, cacheFormat)
	case r.V < 1:
		return nil, false, errors.New("malformed payload: no format version")
	case r.All:
		return nil, true, nil
	}
	var texts []string
	if len(r.Keys) > 0 {
		if err := json.Unmarshal(r.Keys, &texts); err != nil {
			return nil, false, fmt.Errorf("malformed payload: keys: %w", err)
		}
	}
	keys = make([]K, 0, len(texts))
	for i, s := range texts {
		k, err := c.decodeKey(s)
		if err != nil {
			return nil, false, fmt.Errorf("keys[%d] %q: %w", i, s, err)
		}
		keys = append(keys, k)
	}
	return keys, false, nil
}

// decodeKey decodes a key, turning a panicking codec into an error: it
// runs on the node's sync goroutine.
func (c *Cache[K, V]) decodeKey(s string) (k K, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("key codec panicked: %v", p)
		}
	}()
	return c.keys.Decode(s)
}

// resync is the cache's resync hook: records were missed, so flush.
func (c *Cache[K, V]) resync(context.Context, ResyncReason) error {
	c.Purge()
	return nil
}
