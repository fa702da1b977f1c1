package cluster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// OpenDir returns a node (not started) whose journal, positions and leases
// live in the shared folder cfg.Dir. It opens those stores itself, so
// cfg's Journal, Revisions and Leases must be nil, and Prefix empty (it
// names tables); the node's Stop closes the journal it opened, which
// writes as cfg.Instance (random when empty). ctx bounds the opening.
func OpenDir(ctx context.Context, cfg Config) (*Node, error) {
	if err := checkOpen("OpenDir", cfg); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("open node: %w: Dir is empty", ErrInvalidArgument)
	}
	if cfg.Prefix != "" {
		return nil, fmt.Errorf("open node: %w: Prefix is for OpenSQL; a node on a shared folder has no tables", ErrInvalidArgument)
	}
	if cfg.Instance == "" {
		cfg.Instance = journal.NewInstance()
	}
	j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: cfg.Dir, NodeID: cfg.NodeID, Instance: cfg.Instance, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("open node: %w", err)
	}
	revs, err := revision.OpenFile(ctx, revision.FileConfig{Dir: cfg.Dir})
	if err == nil {
		cfg.Leases, err = lock.OpenFile(ctx, lock.FileConfig{Dir: cfg.Dir, Logger: cfg.Logger})
	}
	return finishOpen(ctx, j, revs, cfg, err)
}

// checkOpen refuses stores in cfg: OpenDir and OpenSQL open them.
func checkOpen(fn string, cfg Config) error {
	for _, f := range []struct {
		set  bool
		name string
	}{{cfg.Journal != nil, "Journal"}, {cfg.Revisions != nil, "Revisions"}, {cfg.Leases != nil, "Leases"}} {
		if f.set {
			return fmt.Errorf("open node: %w: %s is set; %s opens Journal, Revisions and Leases itself (leave them nil, or use New)", ErrInvalidArgument, f.name, fn)
		}
	}
	return nil
}

// MinSQLConns is the fewest open connections a node's pool must allow
// (db.SetMaxOpenConns): one each for the membership renewals, the sync
// loop and the journal's append connection. SQLConns adds what the
// features a Config turns on need. What each connection is for is stated
// once, in the package documentation, "Connections".
const MinSQLConns = 3

// SQLConns returns how many open connections a node on dialect d with cfg
// needs its pool to allow at least: MinSQLConns, plus one for the push
// listener where d pushes and cfg.DisablePush is off, plus two while a
// janitor (cfg.Janitor) runs. So 4 on PostgreSQL and 3 elsewhere by
// default. See "Connections" in the package documentation.
func SQLConns(d dialect.Dialect, cfg Config) int {
	n := MinSQLConns
	if pushes(d, cfg) {
		n++
	}
	if cfg.Janitor != nil {
		n += 2
	}
	return n
}

// pushes reports whether a node on d with cfg holds a listening
// connection.
func pushes(d dialect.Dialect, cfg Config) bool {
	_, ok := d.(sqldialect.Notifier)
	return ok && !cfg.DisablePush
}

// ConfigurePool sets db up as a pool that serves one node and nothing
// else, so that it holds no connection the node does not use: at most
// SQLConns(d, cfg) open (db.SetMaxOpenConns), and none kept idle between
// statements (db.SetMaxIdleConns(0)): an idle node then holds only its push
// listener, if any. Each statement outside the journal's append connection
// then opens a connection of its own: about two a SyncDelay on an idle
// node (a poll and a renewal), more on a busy one. OpenSQL does not call
// it: db is the caller's, and a pool the application shares needs more
// (raise MaxOpenConns by the application's needs, and keep idle
// connections with db.SetMaxIdleConns and db.SetConnMaxIdleTime if the
// server can spare them). See "Connections" in the package documentation.
func ConfigurePool(db *sql.DB, d dialect.Dialect, cfg Config) {
	db.SetMaxOpenConns(SQLConns(d, cfg))
	db.SetMaxIdleConns(0)
}

// OpenSQL returns a node (not started) whose journal, positions and leases
// live in db, in the tables with cfg.Prefix (empty: dialect.DefaultPrefix),
// using dialect d. It opens those stores itself, so cfg's Journal,
// Revisions and Leases must be nil, and Dir empty (it names a folder). db
// stays the caller's; the node's Stop closes the journal it opened. db
// must allow at least SQLConns(d, cfg) open connections ("Connections" in
// the package documentation); a smaller limit is an error. When the
// database refuses the node a connection because a connection limit is
// reached, the error matches dialect.ErrTooManyConnections and says so.
func OpenSQL(ctx context.Context, db *sql.DB, d dialect.Dialect, cfg Config) (*Node, error) {
	if err := checkOpen("OpenSQL", cfg); err != nil {
		return nil, err
	}
	if cfg.Dir != "" {
		return nil, fmt.Errorf("open node: %w: Dir is for OpenDir; a node on a database has no folder", ErrInvalidArgument)
	}
	if db == nil || d == nil {
		return nil, fmt.Errorf("open node: %w: db and dialect are required", ErrInvalidArgument)
	}
	if max, need := db.Stats().MaxOpenConnections, SQLConns(d, cfg); max > 0 && max < need {
		return nil, fmt.Errorf("open node: %w: db allows %d open connections (SetMaxOpenConns); a node on %s with this Config needs at least %d "+
			"(see cluster.SQLConns), more if the application shares the pool", ErrInvalidArgument, max, d.Name(), need)
	}
	if cfg.Instance == "" {
		cfg.Instance = journal.NewInstance()
	}
	j, err := journal.OpenSQL(ctx, db, d, journal.SQLConfig{NodeID: cfg.NodeID, Instance: cfg.Instance, Prefix: cfg.Prefix, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("open node: %w", refused(err))
	}
	sqlRevs, err := revision.OpenSQL(ctx, db, d, revision.SQLConfig{Prefix: cfg.Prefix})
	if err == nil {
		cfg.Leases, err = lock.OpenSQL(ctx, db, d, lock.SQLConfig{Prefix: cfg.Prefix})
	}
	var revs revision.Store = listenerSaves{SQL: sqlRevs, j: j}
	n, err := finishOpen(ctx, j, revs, cfg, refused(err))
	if err != nil {
		return nil, err
	}
	if n.behind, err = sqlBehind(db, j, d, cfg.Prefix, cfg.NodeID); err != nil {
		_ = n.Stop(ctx) // not started: closes the journal
		return nil, fmt.Errorf("open node: %w", err)
	}
	return n, nil
}

// refused explains an error that matches dialect.ErrTooManyConnections.
func refused(err error) error {
	if !errors.Is(err, dialect.ErrTooManyConnections) {
		return err
	}
	return fmt.Errorf("the database refused a connection, a connection limit being reached "+
		"(the server's max_connections, or the account's or the database's limit); each running node holds "+
		"connections as \"Connections\" in package cluster says: raise the limit, keep fewer idle connections "+
		"(cluster.ConfigurePool), or run fewer nodes: %w", err)
}

func finishOpen(ctx context.Context, j journal.Journal, revs revision.Store, cfg Config, err error) (*Node, error) {
	if err == nil {
		cfg.Journal, cfg.Revisions = j, revs
		var n *Node
		if n, err = newNode(cfg); err == nil {
			n.closeJournal = true
			return n, nil
		}
	}
	_ = j.Close(ctx)
	return nil, fmt.Errorf("open node: %w", err)
}

// listenerSaves stores a node's position on its journal's listening
// connection while there is one (PostgreSQL with push on), so that a node
// woken by a commit polls and saves without taking another connection
// from the server; on the pool otherwise.
type listenerSaves struct {
	*revision.SQL
	j *journal.SQL
}

func (s listenerSaves) Save(ctx context.Context, nodeID string, rev int64, epoch string) error {
	return s.j.WithSession(ctx, func(q journal.Queryer) error { return s.SQL.SaveOn(ctx, q, nodeID, rev, epoch) })
}
