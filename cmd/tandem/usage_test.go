package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		env  map[string]string
		code int
		want string // in stderr, or in stdout for exit 0
	}{
		{nil, nil, exitUsage, "Usage"},
		{[]string{"--help"}, nil, exitOK, "Exit codes"},
		{[]string{"help"}, nil, exitOK, "nodes clone"},
		{[]string{"status"}, nil, exitUsage, "no store"},
		{[]string{"status", "--dir", dir, "--dsn", "postgres://x"}, nil, exitUsage, "not both"},
		{[]string{"frobnicate"}, nil, exitUsage, `unknown command "frobnicate"`},
		{[]string{"nodes", "frobnicate"}, nil, exitUsage, `unknown command "nodes frobnicate"`},
		{[]string{"datastore"}, nil, exitUsage, "missing subcommand (stat, verify, gc"},
		{[]string{"status", "--bogus"}, nil, exitUsage, "bogus"},
		{[]string{"status", "--dsn", "redis://host/0"}, nil, exitUsage, `unknown scheme "redis"`},
		{[]string{"status", "--dsn", "postgres://u@h/db", "--password-env", "NOPE"}, nil, exitUsage, "NOPE"},
		{[]string{"status", "--dsn", "postgres://u@h/db", "--prefix", "bad prefix;"}, nil, exitUsage, "--prefix"},
		{[]string{"status", "--help"}, nil, exitOK, "--watch"},
		{[]string{"status", "--watch=never", "--dir", dir}, nil, exitUsage, "never"},
		{[]string{"status", "--timeout", "soon", "--dir", dir}, nil, exitUsage, `invalid value "soon" for flag -timeout`},
		{[]string{"--timeout=-1s", "status", "--dir", dir}, nil, exitUsage, "0 for no limit"},
		{[]string{"status", "--help"}, nil, exitOK, "each poll of journal tail -f"},
		{[]string{"status", "--dsn", "sqlserver://sa@h:1433?database=db&encrypt=maybe"}, nil, exitUsage, "--dsn: sqlserver: invalid encrypt"},
		{[]string{"status", "--dsn", "postgres://u:secret@h/db?sslmode=bogus"}, nil, exitUsage, "sslmode is invalid"},
		{[]string{"status", "extra", "--dir", dir}, nil, exitUsage, "extra"},
		{[]string{"status"}, map[string]string{"TANDEM_DIR": dir}, exitNotFound, "no tandem journal"},
		{[]string{"status", "--dir", dir}, map[string]string{"TANDEM_DSN": "postgres://u@h/db"}, exitNotFound, "no tandem journal"},
		{[]string{"status"}, map[string]string{"TANDEM_DSN": "postgres://u@h/db", "TANDEM_DIR": dir}, exitUsage, "not both"},
	} {
		var out, errOut syncBuffer
		getenv := func(k string) string { return c.env[k] }
		code := run(context.Background(), c.args, &out, &errOut, getenv)
		require.Equal(t, c.code, code, "%v: %s%s", c.args, out.String(), errOut.String())
		if c.code == exitOK {
			require.Contains(t, out.String(), c.want, "%v", c.args)
			require.Empty(t, errOut.String())
		} else {
			require.Contains(t, errOut.String(), c.want, "%v", c.args)
			if len(c.args) > 0 {
				require.Equal(t, 1, strings.Count(errOut.String(), "\n"), "%v: %q", c.args, errOut.String())
			}
		}
	}
}

// TestCommandHelp checks that each command's --help prints its usage once
// and names every flag it takes, and that the command list names them too.
func TestCommandHelp(t *testing.T) {
	t.Parallel()
	var top syncBuffer
	require.Equal(t, exitOK, run(context.Background(), []string{"--help"}, &top, &top, func(string) string { return "" }))
	for _, c := range []struct {
		args  []string
		flags []string
	}{
		{[]string{"janitor", "run"}, []string{"--batch-size", "--evict-after"}},
		{[]string{"datastore", "gc"}, []string{"--batch-size", "-v", "--allow-empty-refs", "--allow-short-grace"}},
		{[]string{"journal", "show"}, []string{"--json"}},
		{[]string{"journal", "tail"}, []string{"--json"}},
		{[]string{"nodes", "remove"}, []string{"--force", "--purge"}},
	} {
		var out, errOut syncBuffer
		code := run(context.Background(), append(c.args, "--help"), &out, &errOut, func(string) string { return "" })
		require.Equal(t, exitOK, code, errOut.String())
		require.Empty(t, errOut.String())
		require.Equal(t, 1, strings.Count(out.String(), "Usage:"), out.String())
		name := strings.Join(c.args, " ")
		line := ""
		for _, l := range strings.Split(top.String(), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), name+" ") {
				line = l
			}
		}
		require.NotEmpty(t, line, "tandem --help lists no %s", name)
		for _, f := range c.flags {
			require.Regexp(t, `\n  -`+strings.TrimLeft(f, "-")+`\s`, out.String(), "%s --help", name)
			require.Contains(t, line, "["+f, "tandem --help: %s", name)
		}
	}
	require.Contains(t, top.String(), "one JSON object per line")
}

func TestParseDSN(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, password string
		havePassword bool
		driver, want string
	}{
		{"postgres://u:p@h:5432/db?sslmode=disable", "", false, "pgx", "postgres://u:p@h:5432/db?sslmode=disable"},
		{"postgresql://u@h/db", "s3cr@t/", true, "pgx", "postgresql://u:s3cr%40t%2F@h/db"},
		{"mysql://u@h:3307/db?tls=skip-verify", "p@ss:w/rd", true, "mysql", "u:p@ss:w/rd@tcp(h:3307)/db?parseTime=true&tls=skip-verify"},
		{"mysql://u:p@h/db", "", false, "mysql", "u:p@tcp(h:3306)/db?parseTime=true"},
		{"u:p@tcp(h:3306)/db?parseTime=true", "q", true, "mysql", "u:q@tcp(h:3306)/db?parseTime=true"},
		{"sqlserver://sa@h:1433?database=db", "pw", true, "sqlserver", "sqlserver://sa:pw@h:1433?database=db"},
		{"oracle://u@h:1521/svc", "pw", true, "oracle", "oracle://u:pw@h:1521/svc"},
	} {
		driver, dsn, d, err := parseDSN(c.in, c.password, c.havePassword)
		require.NoError(t, err, c.in)
		require.Equal(t, c.driver, driver, c.in)
		require.Equal(t, c.want, dsn, c.in)
		require.NotNil(t, d)
	}
	_, _, _, err := parseDSN("postgres://u:secret@h:x/db", "", false)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret", "the error must not print the password")

	// A connection string the driver rejects is a usage error that
	// does not print the password either.
	var out, errOut syncBuffer
	code := run(context.Background(), []string{"status", "--dsn", "postgres://u:secret@h/db?sslmode=bogus"}, &out, &errOut, func(string) string { return "" })
	require.Equal(t, exitUsage, code, errOut.String())
	require.NotContains(t, errOut.String(), "secret")
}
