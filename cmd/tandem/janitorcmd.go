package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/tandem-go/tandem/janitor"
)

const janitorArgs = "[--dry-run] [--keep-records N] [--keep-for D] [--evict-after D] [--batch-size N]"

func runJanitor(ctx context.Context, e *env, args []string) error {
	fs := e.flags("janitor run", janitorArgs)
	dry := fs.Bool("dry-run", false, "only say what a run would do; change nothing, take no lease")
	keepRecords := fs.Int64("keep-records", janitor.DefaultKeepRecords, "keep at least the last N records (negative: none extra)")
	keepFor := fs.Duration("keep-for", janitor.DefaultKeepFor, "keep the records of the last D (negative: none extra)")
	evictAfter := fs.Duration("evict-after", janitor.DefaultEvictAfter, "evict nodes gone for longer than D")
	batch := fs.Int("batch-size", janitor.DefaultBatchSize, "records per fenced delete")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *keepRecords == 0 {
		*keepRecords = -1 // 0 means "the default" to janitor.Config
	}
	if *keepFor == 0 {
		*keepFor = -1
	}
	if *evictAfter <= 0 || *batch <= 0 {
		return usageError("--evict-after and --batch-size must be positive")
	}
	s, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	j, err := janitor.New(janitor.Config{
		NodeID: cliNode, Journal: s.j, Revisions: s.revs, Leases: s.ls,
		KeepRecords: *keepRecords, KeepFor: *keepFor, EvictAfter: *evictAfter, BatchSize: *batch,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return usageError("%v", err)
	}
	var rep janitor.Report
	if *dry {
		rep, err = j.Plan(ctx)
	} else {
		rep, err = j.RunOnce(ctx)
	}
	if err != nil {
		return err
	}
	if e.g.json {
		type eviction struct {
			Node        string  `json:"node"`
			Revision    int64   `json:"revision"`
			GoneSeconds float64 `json:"gone_seconds"`
		}
		ev := []eviction{}
		for _, x := range rep.Evicted {
			ev = append(ev, eviction{x.NodeID, x.Revision, x.Gone.Seconds()})
		}
		return writeJSON(e.stdout, map[string]any{
			"dry_run": *dry, "head": rep.Head, "tail": rep.Tail, "new_tail": rep.NewTail,
			"horizon": rep.Horizon, "pinned_by": rep.PinnedBy, "pinned_why": rep.PinnedWhy, "pinned_lag": rep.PinnedLag,
			"evicted": ev, "deleted": rep.Deleted, "batches": rep.Batches, "duration_seconds": rep.Duration.Seconds(),
		})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	verb := "deleted"
	if *dry {
		fmt.Fprintln(tw, "dry run: nothing changed")
		verb = "would delete"
	}
	fmt.Fprintf(tw, "journal\thead %d, tail %d\n", rep.Head, rep.Tail)
	pinned := ""
	if rep.PinnedBy != "" {
		pinned = fmt.Sprintf(", pinned by %s (%s, %d behind)", rep.PinnedBy, rep.PinnedWhy, rep.PinnedLag)
	}
	fmt.Fprintf(tw, "horizon\t%d%s\n", rep.Horizon, pinned)
	fmt.Fprintf(tw, "new tail\t%d\n", rep.NewTail)
	if *dry {
		fmt.Fprintf(tw, "%s\t%d records\n", verb, max(rep.NewTail-rep.Tail, 0))
	} else {
		fmt.Fprintf(tw, "%s\t%d records in %d batches\n", verb, rep.Deleted, rep.Batches)
	}
	for _, x := range rep.Evicted {
		what := "evicted"
		if *dry {
			what = "would evict"
		}
		fmt.Fprintf(tw, "%s\tnode %s at position %d, gone %s\n", what, x.NodeID, x.Revision, x.Gone.Round(1e9))
	}
	return tw.Flush()
}
