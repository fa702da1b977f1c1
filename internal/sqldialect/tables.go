package sqldialect

import "github.com/tandem-go/tandem/ident"

// DefaultPrefix is the table prefix used when a Config leaves it empty.
const DefaultPrefix = "tandem_"

// Tables names the tables of one tandem schema, each with its prefix.
type Tables struct {
	Prefix         string
	Journal        string
	GlobalRevision string
	Meta           string
	LocalRevisions string
	Locks          string
	// Pending holds records published inside an application's
	// transaction until a group commit moves them into the journal
	// (schema version 4).
	Pending string
	// Blobs, BlobChunks and BlobUploads hold the data store (schema
	// version 5): one row per blob, its content in bounded chunks, and
	// the uploads in progress whose chunks belong to no blob yet.
	Blobs       string
	BlobChunks  string
	BlobUploads string
}

// NewTables validates prefix (see ident.Prefix) and returns the table names
// that carry it. field names the configuration field in the error.
func NewTables(field, prefix string) (Tables, error) {
	if err := ident.Prefix(field, prefix); err != nil {
		return Tables{}, err
	}
	return Tables{
		Prefix:         prefix,
		Journal:        prefix + "journal",
		GlobalRevision: prefix + "global_revision",
		Meta:           prefix + "meta",
		LocalRevisions: prefix + "local_revisions",
		Locks:          prefix + "locks",
		Pending:        prefix + "pending",
		Blobs:          prefix + "blobs",
		BlobChunks:     prefix + "blob_chunks",
		BlobUploads:    prefix + "blob_uploads",
	}, nil
}

// Channel is the notification channel of the journal with these tables.
func (t Tables) Channel() string { return t.Prefix + "journal" }

// All lists every table name, in creation order.
func (t Tables) All() []string {
	return []string{t.Journal, t.GlobalRevision, t.Meta, t.LocalRevisions, t.Locks, t.Pending, t.Blobs, t.BlobChunks, t.BlobUploads}
}
