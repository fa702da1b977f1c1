package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/lock"
)

func runDatastoreStat(ctx context.Context, e *env, args []string) error {
	s, err := e.connectNoArgs(ctx, e.flags("datastore stat", ""), args)
	if err != nil {
		return err
	}
	defer s.close()
	ds, err := s.blobs(ctx)
	if err != nil {
		return err
	}
	var count, bytes, largest int64
	var oldest, newest time.Time
	err = ds.Walk(ctx, func(in datastore.Info) error {
		count++
		bytes += in.Length
		largest = max(largest, in.Length)
		if oldest.IsZero() || in.LastUsed.Before(oldest) {
			oldest = in.LastUsed
		}
		if in.LastUsed.After(newest) {
			newest = in.LastUsed
		}
		return nil
	})
	if err != nil {
		return err
	}
	if e.g.json {
		return writeJSON(e.stdout, map[string]any{"blobs": count, "bytes": bytes, "largest": largest,
			"least_recently_used": timePtr(oldest), "most_recently_used": timePtr(newest)})
	}
	fmt.Fprintf(e.stdout, "%d blobs, %d bytes (largest %d)\n", count, bytes, largest)
	if count > 0 {
		fmt.Fprintf(e.stdout, "last used between %s and %s\n", fmtTime(timePtr(oldest)), fmtTime(timePtr(newest)))
	}
	return nil
}

func runDatastoreVerify(ctx context.Context, e *env, args []string) error {
	s, err := e.connectNoArgs(ctx, e.flags("datastore verify", ""), args)
	if err != nil {
		return err
	}
	defer s.close()
	ds, err := s.blobs(ctx)
	if err != nil {
		return err
	}
	type bad struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	}
	var checked, bytes int64
	corrupt := []bad{}
	err = ds.Walk(ctx, func(in datastore.Info) error {
		rc, err := ds.Get(ctx, in.ID)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil // deleted since the walk saw it
		}
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		checked++
		bytes += n
		switch {
		case errors.Is(err, datastore.ErrCorrupt):
			msg := err.Error()
			if _, after, ok := strings.Cut(msg, datastore.ErrCorrupt.Error()+": "); ok {
				msg = after // the id is said already
			}
			corrupt = append(corrupt, bad{string(in.ID), msg})
			if !e.g.json {
				fmt.Fprintf(e.stdout, "corrupt %s: %s\n", in.ID, msg)
			}
		case err != nil:
			return fmt.Errorf("read blob %s: %w", in.ID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if e.g.json {
		if err := writeJSON(e.stdout, map[string]any{"checked": checked, "bytes": bytes, "corrupt": corrupt}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "%d blobs checked (%d bytes), %d corrupt\n", checked, bytes, len(corrupt))
	}
	if len(corrupt) > 0 {
		return withCode(exitFailed, "%d of %d blobs are corrupt (first: %s)", len(corrupt), checked, corrupt[0].ID)
	}
	return nil
}

const gcArgs = "(--refs FILE | --dry-run) [--grace D] [--batch-size N] [-v] [--allow-empty-refs] [--allow-short-grace]"

// minGrace is the shortest --grace a real collection takes without
// --allow-short-grace: the grace period is what protects a blob between
// its Put and the commit of the reference to it, and an upload in progress.
const minGrace = time.Minute

func runDatastoreGC(ctx context.Context, e *env, args []string) error {
	fs := e.flags("datastore gc", gcArgs)
	refsFile := fs.String("refs", "", `file listing every referenced blob id, one per line ("-": stdin)`)
	dry := fs.Bool("dry-run", false, "only report what would be deleted")
	grace := fs.Duration("grace", datastore.DefaultGracePeriod, "keep blobs used within D, referenced or not")
	batch := fs.Int("batch-size", datastore.DefaultBatchSize, "blobs per fenced delete")
	verbose := fs.Bool("v", false, `list every blob deleted (or that would be); with --json, as "garbage"`)
	allowEmpty := fs.Bool("allow-empty-refs", false, "collect even if --refs lists no id (every blob unused for the grace period is then garbage)")
	allowShort := fs.Bool("allow-short-grace", false, fmt.Sprintf("collect with a --grace below %v (blobs being written and not yet referenced may go)", minGrace))
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *refsFile == "" && !*dry {
		return withCode(exitRefused, "refusing to collect without the referenced ids: give --refs FILE (one id per line, - for stdin), or --dry-run")
	}
	if *grace <= 0 || *batch <= 0 {
		return usageError("--grace and --batch-size must be positive")
	}
	if !*dry && *grace < minGrace && !*allowShort {
		return withCode(exitRefused, "refusing to collect with --grace %v, below %v: blobs written moments ago whose references are not committed yet would go; give --allow-short-grace if no application writes", *grace, minGrace)
	}
	var refs []datastore.ID
	if *refsFile != "" {
		var err error
		if refs, err = readRefs(*refsFile, e); err != nil {
			return err
		}
		if len(refs) == 0 && !*dry && !*allowEmpty {
			return withCode(exitRefused, "--refs %s lists no blob id: refusing to delete every blob unused for %v (did the program listing the references fail?); give --allow-empty-refs if nothing is referenced", *refsFile, *grace)
		}
	}
	s, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	ds, err := s.blobs(ctx)
	if err != nil {
		return err
	}
	cfg := datastore.GCConfig{GracePeriod: *grace, BatchSize: *batch, DryRun: *dry,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	type garbage struct {
		ID    string `json:"id"`
		Bytes int64  `json:"bytes"`
	}
	var listed []garbage // -v --json
	switch {
	case *verbose && e.g.json:
		listed = []garbage{}
		cfg.Report = func(in datastore.Info) { listed = append(listed, garbage{string(in.ID), in.Length}) }
	case *verbose:
		cfg.Report = func(in datastore.Info) { fmt.Fprintf(e.stdout, "garbage %s (%d bytes)\n", in.ID, in.Length) }
	}
	c, err := datastore.NewCollector(ds, cfg)
	if err != nil {
		return usageError("%v", err)
	}
	each := datastore.ReferencesFunc(func(ctx context.Context, yield func(datastore.ID) error) error {
		for _, id := range refs {
			if err := yield(id); err != nil {
				return err
			}
		}
		return nil
	})
	var lease *lock.Lease
	if !*dry {
		ls, err := s.leases(ctx)
		if err != nil {
			return err
		}
		client, err := lock.New(lock.Config{NodeID: cliNode, Store: ls, Logger: cfg.Logger})
		if err != nil {
			return err
		}
		lease, err = client.TryAcquire(ctx, datastore.DefaultLeaseName)
		if err != nil {
			if errors.Is(err, lock.ErrUnavailable) {
				return withCode(exitBusy, "another process holds the lease %q (it is collecting)", datastore.DefaultLeaseName)
			}
			return err
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_ = lease.Release(rctx)
		}()
	}
	run, err := c.Collect(ctx, lease, each)
	if err != nil {
		return err
	}
	if e.g.json {
		out := map[string]any{"dry_run": run.DryRun, "started": run.Started.UTC(), "cutoff": run.Cutoff.UTC(),
			"marked": run.Marked, "scanned": run.Scanned, "referenced": run.Referenced, "recent": run.Recent,
			"skipped": run.Skipped, "deleted": run.Deleted, "bytes_freed": run.BytesFreed, "uploads": run.Uploads}
		if listed != nil {
			out["garbage"] = listed
		}
		return writeJSON(e.stdout, out)
	}
	verb := "deleted"
	if run.DryRun {
		verb = "would delete"
		if *refsFile == "" {
			fmt.Fprintln(e.stdout, "dry run without --refs: every blob unused for the grace period counts as garbage")
		}
	}
	fmt.Fprintf(e.stdout, "%d referenced ids; %d blobs scanned: %d referenced, %d recent, %d skipped; %s %d blobs (%d bytes); %d abandoned uploads\n",
		run.Marked, run.Scanned, run.Referenced, run.Recent, run.Skipped, verb, run.Deleted, run.BytesFreed, run.Uploads)
	return nil
}

// readRefs reads blob ids, one per line (blank lines and lines starting
// with # are skipped), from a file or, for "-", stdin.
func readRefs(name string, e *env) ([]datastore.ID, error) {
	var r io.Reader
	if name == "-" {
		r = e.stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, withCode(exitNotFound, "--refs: %v", err)
			}
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var ids []datastore.ID
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		id, err := datastore.ParseID(t)
		if err != nil {
			return nil, usageError("--refs %s line %d: %v", name, line, err)
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read --refs %s: %w", name, err)
	}
	return ids, nil
}
