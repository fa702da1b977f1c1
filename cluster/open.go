package cluster

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// OpenDir returns a node (not started) whose journal, positions and leases
// live in the shared folder dir. cfg's Journal, Revisions and Leases must
// be nil; the node's Stop closes the journal it opened.
func OpenDir(ctx context.Context, dir string, cfg Config) (*Node, error) {
	if cfg.Journal != nil || cfg.Revisions != nil || cfg.Leases != nil {
		return nil, fmt.Errorf("open node: %w: OpenDir opens Journal, Revisions and Leases itself; leave them nil", ErrInvalidArgument)
	}
	j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: cfg.NodeID, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("open node: %w", err)
	}
	revs, err := revision.OpenFile(dir)
	if err == nil {
		cfg.Leases, err = lock.OpenFile(dir, lock.FileConfig{Logger: cfg.Logger})
	}
	return finishOpen(ctx, j, revs, cfg, err)
}

// OpenSQL returns a node (not started) whose journal, positions and leases
// live in db, in tables with the given prefix (empty: "tandem_"), using
// dialect d. db stays the caller's; the node's Stop closes the journal it
// opened. db must allow at least 3 open connections (4 with push on
// PostgreSQL).
func OpenSQL(ctx context.Context, db *sql.DB, d dialect.Dialect, prefix string, cfg Config) (*Node, error) {
	if cfg.Journal != nil || cfg.Revisions != nil || cfg.Leases != nil {
		return nil, fmt.Errorf("open node: %w: OpenSQL opens Journal, Revisions and Leases itself; leave them nil", ErrInvalidArgument)
	}
	j, err := journal.OpenSQL(ctx, db, d, journal.SQLConfig{NodeID: cfg.NodeID, Prefix: prefix, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("open node: %w", err)
	}
	revs, err := revision.OpenSQL(ctx, db, d, prefix)
	if err == nil {
		cfg.Leases, err = lock.OpenSQL(ctx, db, d, prefix)
	}
	return finishOpen(ctx, j, revs, cfg, err)
}

func finishOpen(ctx context.Context, j journal.Journal, revs revision.Store, cfg Config, err error) (*Node, error) {
	if err == nil {
		cfg.Journal, cfg.Revisions = j, revs
		var n *Node
		if n, err = New(cfg); err == nil {
			n.closeJournal = true
			return n, nil
		}
	}
	_ = j.Close(ctx)
	return nil, fmt.Errorf("open node: %w", err)
}
