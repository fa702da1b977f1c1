package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// Exit codes; see the package documentation.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitRefused  = 3
	exitNotFound = 4
	exitBusy     = 5
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// stdin is where datastore gc --refs - reads; tests may replace it.
var stdin io.Reader = os.Stdin

// exitError carries the exit code an error ends the command with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

func usageError(format string, args ...any) error { return withCode(exitUsage, format, args...) }

// exitCode maps an error to the command's exit code.
func exitCode(err error) int {
	var e *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &e):
		return e.code
	case errors.Is(err, revision.ErrNotFound), errors.Is(err, datastore.ErrNotFound):
		return exitNotFound
	case errors.Is(err, revision.ErrExists):
		return exitRefused
	case errors.Is(err, janitor.ErrBusy), errors.Is(err, lock.ErrUnavailable):
		return exitBusy
	case errors.Is(err, ident.ErrInvalid):
		return exitUsage
	}
	return exitFailed
}

// env is what a command needs from its surroundings.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	g              *globals

	pace     pace                    // how --timeout applies to the command
	stopRun  context.CancelCauseFunc // ends the command's context
	deadline *time.Timer             // --timeout over the whole command, once armed
}

// globals are the flags every command accepts.
type globals struct {
	dsn, dir, prefix, passwordEnv string
	json                          bool
	timeout                       timeoutFlag
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.dsn, "dsn", g.dsn, "database URL: postgres://, mysql://, sqlserver://, oracle:// (default $TANDEM_DSN)")
	fs.StringVar(&g.dir, "dir", g.dir, "shared folder, instead of --dsn (default $TANDEM_DIR)")
	fs.StringVar(&g.prefix, "prefix", g.prefix, "table prefix")
	fs.StringVar(&g.passwordEnv, "password-env", g.passwordEnv, "environment variable holding the database password")
	fs.BoolVar(&g.json, "json", g.json, "print JSON instead of tables")
	fs.Var(&g.timeout, "timeout", "give up after `D` (default 1m; 1h for janitor run and datastore stat, verify and gc);\n"+
		"each refresh of status --watch and each poll of journal tail -f gets its own D; 0: no limit")
}

type command struct {
	name, args, help string
	pace             pace
	run              func(ctx context.Context, e *env, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"status", "[--json] [--watch[=INTERVAL]]", "the journal, the nodes, the leases, the janitor and the data store", paced, runStatus},
		{"nodes remove", "[--force] [--purge] ID", "evict a node: it stops holding the janitor back and resyncs if it returns\n" +
			"      (refuses a live node unless --force; --purge deletes the position: a node\n" +
			"      returning with that id then starts at the head WITHOUT a resync)", quick, runNodesRemove},
		{"nodes clone", "FROM TO", "give node TO the position of node FROM (adding a cloned node)", quick, runNodesClone},
		{"journal show", journalShowArgs, "print records (with --json, one JSON object per line)", quick, runJournalShow},
		{"journal tail", journalTailArgs, "print the last records, and with -f new ones as they come\n" +
			"      (with --json, one JSON object per line)", paced, runJournalTail},
		{"janitor run", janitorArgs, "prune the journal and evict departed nodes now", bulk, runJanitor},
		{"datastore stat", "", "count the blobs and their bytes", bulk, runDatastoreStat},
		{"datastore verify", "", "read every blob, verifying its hash", bulk, runDatastoreVerify},
		{"datastore gc", gcArgs, "collect unreferenced blobs (refuses an empty --refs list, or a --grace\n" +
			"      below 1m, unless --allow-empty-refs or --allow-short-grace)", bulk, runDatastoreGC},
		{"schema version", "", "the schema version of the database (or folder)", quick, runSchemaVersion},
		{"schema migrate", "", "create or migrate the schema", quick, runSchemaMigrate},
		{"schema drop", "--yes [--force]", "delete every tandem table (or subfolder)", quick, runSchemaDrop},
	}
}

const usageHead = `Usage: tandem (--dsn URL | --dir PATH) [--prefix P] [--password-env NAME] [--json] [--timeout D] COMMAND [ARGS]

Global flags (before or after the command):
  --dsn URL            postgres://, postgresql://, mysql://, sqlserver:// or oracle:// URL,
                       or a go-sql-driver DSN user@tcp(host:port)/db (default $TANDEM_DSN)
  --dir PATH           a shared folder instead of a database (default $TANDEM_DIR)
  --prefix P           table prefix (default "tandem_")
  --password-env NAME  take the database password from $NAME (default: $TANDEM_PASSWORD, if set)
  --json               print JSON for scripts
  --timeout D          give up after D (default 1m; 1h for janitor run and datastore stat,
                       verify and gc); each refresh of status --watch and each poll of
                       journal tail -f gets its own D; 0: no limit

Commands:
`

const usageTail = `
Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 refused (live node without --force,
drop without --yes, gc with no references), 4 not found (node, schema, folder), 5 busy (another process holds the lease).
Errors are printed on stderr as one line. "tandem COMMAND --help" shows a command's flags.
`

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-17s %s\n      %s\n", c.name, c.args, c.help)
	}
	fmt.Fprint(w, usageTail)
}

// run is the command: main calls it with the process's arguments (without
// the program name), streams and environment, and exits with its result.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	g := &globals{prefix: "tandem_"}
	fs := flag.NewFlagSet("tandem", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "tandem: %v (see tandem --help)\n", err)
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		usage(stderr)
		return exitUsage
	}
	if rest[0] == "help" {
		usage(stdout)
		return exitOK
	}
	var cmd *command
	n := 1
	for i := range commands {
		words := strings.Fields(commands[i].name)
		if len(rest) >= len(words) && strings.Join(rest[:len(words)], " ") == commands[i].name {
			cmd, n = &commands[i], len(words)
			break
		}
	}
	if cmd == nil && hasGroup(rest[0]) && (len(rest) == 1 || strings.HasPrefix(rest[1], "-")) {
		var subs []string
		for _, c := range commands {
			if sub, ok := strings.CutPrefix(c.name, rest[0]+" "); ok {
				subs = append(subs, sub)
			}
		}
		fmt.Fprintf(stderr, "tandem: %s: missing subcommand (%s; see tandem --help)\n", rest[0], strings.Join(subs, ", "))
		return exitUsage
	}
	if cmd == nil {
		name := rest[0]
		if len(rest) > 1 && !strings.HasPrefix(rest[1], "-") && hasGroup(rest[0]) {
			name += " " + rest[1]
		}
		fmt.Fprintf(stderr, "tandem: unknown command %q (see tandem --help)\n", name)
		return exitUsage
	}
	rctx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, g: g, pace: cmd.pace, stopRun: stopRun}
	err := cmd.run(rctx, e, rest[n:])
	if e.deadline != nil {
		e.deadline.Stop()
	}
	err = timedOut(ctx, rctx, err)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(stderr, "tandem: %s: %s\n", cmd.name, msg)
	}
	return exitCode(err)
}

func hasGroup(word string) bool {
	for _, c := range commands {
		if strings.HasPrefix(c.name, word+" ") {
			return true
		}
	}
	return false
}

// flags returns a FlagSet for the command name that also takes the global
// flags; its help goes to e.stdout.
func (e *env) flags(name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet("tandem "+name, flag.ContinueOnError)
	fs.SetOutput(e.stdout)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tandem %s %s\n\nFlags (global flags included):\n", name, args)
		fs.PrintDefaults()
	}
	e.g.register(fs)
	return fs
}

// connectNoArgs parses the flags of a command that takes no arguments
// (only fs's flags) and connects to the store; the caller closes it.
func (e *env) connectNoArgs(ctx context.Context, fs *flag.FlagSet, args []string) (*store, error) {
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return nil, err
	}
	return e.connect(ctx)
}

// parse parses args into fs, allowing flags after positional arguments,
// and checks the number of positional arguments. Once the flags are
// known, it starts the --timeout of a command that is not paced.
func (e *env) parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	pos, err := parse(fs, args, min, max)
	if err == nil && e.pace != paced {
		e.limitRun()
	}
	return pos, err
}

func parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	defer fs.SetOutput(out)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(out)
				fs.Usage()
				return nil, err
			}
			return nil, usageError("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) < min || len(pos) > max {
		switch {
		case max == 0:
			return nil, usageError("takes no arguments, got %q", strings.Join(pos, " "))
		case len(pos) < min:
			return nil, usageError("missing arguments (see --help)")
		default:
			return nil, usageError("too many arguments: %q", strings.Join(pos[max:], " "))
		}
	}
	return pos, nil
}
