package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/clusterhttp"
	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/journal"
)

const (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

func nodeMetrics(c *Collector) []metric[cluster.Stats] {
	type S = cluster.Stats
	return []metric[S]{
		def(c, "tandem_node_running", "Whether the node is started and not stopped or replaced (1) or not (0).", gauge, func(s S) float64 { return boolean(s.Running) }),
		def(c, "tandem_node_member", "Whether the node holds its membership lease now (1): it publishes, and its caches serve, only then.", gauge, func(s S) float64 { return boolean(s.Member) }),
		def(c, "tandem_node_revision", "The last journal revision the node applied.", gauge, func(s S) float64 { return float64(s.Revision) }),
		def(c, "tandem_node_head_revision", "The journal's head as the node last saw it.", gauge, func(s S) float64 { return float64(s.Head) }),
		def(c, "tandem_node_lag_records", "How many records the node is behind the journal's head.", gauge, func(s S) float64 { return float64(s.Lag) }),
		def(c, "tandem_node_last_sync_timestamp_seconds", "When the node last finished a sync (Unix time, its own clock); 0 before the first.", gauge, func(s S) float64 { return seconds(s.LastSync) }),
		def(c, "tandem_node_applied_records_total", "Records the node's handlers applied.", counter, func(s S) float64 { return float64(s.Applied) }),
		def(c, "tandem_node_unhandled_records_total", "Records of producers the node has no handler for.", counter, func(s S) float64 { return float64(s.Unhandled) }),
		def(c, "tandem_node_handler_failures_total", "Failed handler calls (errors, panics, timeouts), each retried.", counter, func(s S) float64 { return float64(s.HandlerFailures) }),
		def(c, "tandem_node_dead_lettered_records_total", "Records skipped because the node's DeadLetter gave up on them.", counter, func(s S) float64 { return float64(s.GaveUp) }),
		def(c, "tandem_node_resyncs_total", "Resyncs: the node's position was pruned away, evicted or of another journal, so it dropped what it derived and continued from the head.", counter, func(s S) float64 { return float64(s.Resyncs) }),
		def(c, "tandem_node_sync_errors_total", "Syncs that failed (journal or store errors).", counter, func(s S) float64 { return float64(s.SyncErrors) }),
		def(c, "tandem_node_stuck_seconds", "How long the node has waited at a record its handler cannot apply; 0 when it waits at none.", gauge, func(s S) float64 {
			if s.Stuck == nil {
				return 0
			}
			return time.Since(s.Stuck.Since).Seconds()
		}),
		def(c, "tandem_node_stuck_revision", "The revision of the record the node waits at; 0 when it waits at none.", gauge, func(s S) float64 {
			if s.Stuck == nil {
				return 0
			}
			return float64(s.Stuck.Revision)
		}),
	}
}

func journalMetrics(c *Collector) []metric[journal.Stats] {
	type S = journal.Stats
	resolved := def(c, "tandem_journal_resolved_batches_total", "Group commits whose outcome was open and was looked up, by what was found: committed (reported as success) or not_written (reported as an error).", counter, func(s S) float64 { return 0 }, "outcome")
	c.resolved = resolved.desc
	return []metric[S]{
		resolved,
		def(c, "tandem_journal_appends_total", "Append calls this node's journal committed.", counter, func(s S) float64 { return float64(s.Appends) }),
		def(c, "tandem_journal_appended_records_total", "Records those appends committed.", counter, func(s S) float64 { return float64(s.Records) }),
		def(c, "tandem_journal_batches_total", "Group commits (transactions) of this node's appends; records per batch is the group size.", counter, func(s S) float64 { return float64(s.Batches) }),
		def(c, "tandem_journal_failed_batches_total", "Group commits that failed.", counter, func(s S) float64 { return float64(s.FailedBatches) }),
		def(c, "tandem_journal_discarded_connections_total", "Append connections closed for good after an error.", counter, func(s S) float64 { return float64(s.ConnsDiscarded) }),
		def(c, "tandem_journal_unknown_outcome_batches_total", "Group commits whose outcome stayed unknown (the database unreachable for the resolve timeout).", counter, func(s S) float64 { return float64(s.OutcomeUnknown) }),
		def(c, "tandem_journal_relayed_records_total", "Outbox entries this node moved from the pending table into the journal.", counter, func(s S) float64 { return float64(s.Relayed) }),
	}
}

// janitorStats lets janitor.Stats be a type parameter distinct from others.
type janitorStats janitor.Stats

func janitorMetrics(c *Collector) []metric[janitorStats] {
	type S = janitorStats
	return []metric[S]{
		def(c, "tandem_janitor_runs_total", "Janitor runs on this node.", counter, func(s S) float64 { return float64(s.Runs) }),
		def(c, "tandem_janitor_failed_runs_total", "Janitor runs on this node that failed.", counter, func(s S) float64 { return float64(s.Errors) }),
		def(c, "tandem_janitor_deleted_records_total", "Journal records the janitor deleted on this node's runs.", counter, func(s S) float64 { return float64(s.Deleted) }),
		def(c, "tandem_janitor_evicted_nodes_total", "Nodes the janitor evicted on this node's runs.", counter, func(s S) float64 { return float64(s.Evicted) }),
		def(c, "tandem_janitor_last_run_timestamp_seconds", "When the last janitor run on this node started (Unix time); 0 before the first.", gauge, func(s S) float64 { return seconds(s.LastRun) }),
		def(c, "tandem_janitor_next_run_timestamp_seconds", "When the janitor is next scheduled (Unix time); 0 before it starts.", gauge, func(s S) float64 { return seconds(s.NextRun) }),
		def(c, "tandem_janitor_last_run_duration_seconds", "How long the last janitor run on this node took.", gauge, func(s S) float64 { return s.Last.Duration.Seconds() }),
		def(c, "tandem_janitor_pinned_lag_records", "At the last run, how far the node that pinned the horizon was behind the head.", gauge, func(s S) float64 { return float64(s.Last.PinnedLag) }),
	}
}

func cacheMetrics(c *Collector) []metric[cluster.CacheStats] {
	type S = cluster.CacheStats
	return []metric[S]{
		def(c, "tandem_cache_entries", "Entries the cache holds.", gauge, func(s S) float64 { return float64(s.Len) }, "cache"),
		def(c, "tandem_cache_hits_total", "Lookups that found the key.", counter, func(s S) float64 { return float64(s.Hits) }, "cache"),
		def(c, "tandem_cache_misses_total", "Lookups that did not find the key.", counter, func(s S) float64 { return float64(s.Misses) }, "cache"),
		def(c, "tandem_cache_loads_total", "Load functions run (concurrent misses share one).", counter, func(s S) float64 { return float64(s.Loads) }, "cache"),
		def(c, "tandem_cache_stale_loads_total", "Loads not stored because the key was invalidated meanwhile.", counter, func(s S) float64 { return float64(s.StaleLoads) }, "cache"),
		def(c, "tandem_cache_evictions_total", "Entries dropped to make room.", counter, func(s S) float64 { return float64(s.Evictions) }, "cache"),
		def(c, "tandem_cache_invalidations_total", "Invalidation records of other nodes the cache applied.", counter, func(s S) float64 { return float64(s.Invalidations) }, "cache"),
		def(c, "tandem_cache_flushes_total", "Times the whole cache was dropped (purge, invalidate-all, resync, unreadable record).", counter, func(s S) float64 { return float64(s.Flushes) }, "cache"),
		def(c, "tandem_cache_unreadable_records_total", "Invalidation records the cache could not read, each answered by a flush.", counter, func(s S) float64 { return float64(s.Unreadable) }, "cache"),
	}
}

func gcMetrics(c *Collector) []metric[datastore.GCStats] {
	type S = datastore.GCStats
	return []metric[S]{
		def(c, "tandem_datastore_gc_runs_total", "Data store garbage collections on this node that completed.", counter, func(s S) float64 { return float64(s.Runs) }),
		def(c, "tandem_datastore_gc_failed_runs_total", "Data store garbage collections on this node that failed.", counter, func(s S) float64 { return float64(s.Failures) }),
		def(c, "tandem_datastore_gc_deleted_blobs_total", "Blobs the collections deleted.", counter, func(s S) float64 { return float64(s.Deleted) }),
		def(c, "tandem_datastore_gc_freed_bytes_total", "Bytes of the blobs the collections deleted.", counter, func(s S) float64 { return float64(s.BytesFreed) }),
		def(c, "tandem_datastore_gc_last_run_timestamp_seconds", "When the last completed collection began (Unix time, the store's clock); 0 before the first.", gauge, func(s S) float64 { return seconds(s.Last.Started) }),
		def(c, "tandem_datastore_gc_last_run_duration_seconds", "How long the last completed collection took.", gauge, func(s S) float64 { return s.Last.Duration.Seconds() }),
		def(c, "tandem_datastore_gc_last_scanned_blobs", "Blobs the last completed collection examined.", gauge, func(s S) float64 { return float64(s.Last.Scanned) }),
		def(c, "tandem_datastore_gc_last_marked_blobs", "Distinct blob ids the application referenced in the last completed collection.", gauge, func(s S) float64 { return float64(s.Last.Marked) }),
	}
}

func httpMetrics(c *Collector) []metric[clusterhttp.Stats] {
	type S = clusterhttp.Stats
	return []metric[S]{
		def(c, "tandem_http_revision_tokens_total", "Requests carrying a valid revision token of this journal.", counter, func(s S) float64 { return float64(s.Tokens) }),
		def(c, "tandem_http_revision_waits_total", "Requests whose token's revision this node had not applied yet, and waited for.", counter, func(s S) float64 { return float64(s.Waited) }),
		def(c, "tandem_http_revision_wait_failures_total", "Requests answered 503 because the wait for their revision ran out or failed.", counter, func(s S) float64 { return float64(s.TimedOut) }),
		def(c, "tandem_http_foreign_tokens_total", "Revision tokens of another journal epoch, ignored.", counter, func(s S) float64 { return float64(s.Foreign) }),
		def(c, "tandem_http_malformed_tokens_total", "Revision tokens that did not parse, answered 400.", counter, func(s S) float64 { return float64(s.Malformed) }),
	}
}
