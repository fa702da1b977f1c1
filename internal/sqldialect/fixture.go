package sqldialect

import (
	"os"
	"strings"
)

// ReadFixture reads a schema fixture: a file of SQL statements kept in a
// dialect's testdata (testdata/schema_v1.sql holds the first release's
// DDL), each ended by a line "--;", where lines starting with "--" are
// comments and "{{p}}" stands for the table prefix. It returns the
// statements with prefix filled in.
func ReadFixture(path, prefix string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, stmt := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n--;\n") {
		var lines []string
		for _, l := range strings.Split(stmt, "\n") {
			if !strings.HasPrefix(l, "--") {
				lines = append(lines, l)
			}
		}
		out = append(out, strings.ReplaceAll(strings.Join(lines, "\n"), "{{p}}", prefix))
	}
	return out, nil
}
