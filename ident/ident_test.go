package ident_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/ident"
)

func TestValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		check func(field, value string) error
		value string
		ok    bool
	}{
		{"NodeID", ident.NodeID, "node-1", true},
		{"NodeID", ident.NodeID, "A.b_c-9", true},
		{"NodeID", ident.NodeID, "_x", true},
		{"NodeID", ident.NodeID, strings.Repeat("n", ident.MaxNodeIDLen), true},
		{"NodeID", ident.NodeID, "", false},
		{"NodeID", ident.NodeID, strings.Repeat("n", ident.MaxNodeIDLen+1), false},
		{"NodeID", ident.NodeID, ".hidden", false},
		{"NodeID", ident.NodeID, "-flag", false},
		{"NodeID", ident.NodeID, "a/b", false},
		{"NodeID", ident.NodeID, "..", false},
		{"NodeID", ident.NodeID, "a b", false},
		{"NodeID", ident.NodeID, "nöde", false},
		{"NodeID", ident.NodeID, "a\x00b", false},

		{"LeaseName", ident.LeaseName, "janitor", true},
		{"LeaseName", ident.LeaseName, strings.Repeat("l", ident.MaxNameLen), true},
		{"LeaseName", ident.LeaseName, strings.Repeat("l", ident.MaxNameLen+1), false},
		{"LeaseName", ident.LeaseName, "", false},
		{"LeaseName", ident.LeaseName, ".lock", false},
		{"LeaseName", ident.LeaseName, "../etc/passwd", false},
		{"LeaseName", ident.LeaseName, `a\b`, false},

		{"Producer", ident.Producer, "cache/users", true},
		{"Producer", ident.Producer, "search-index", true},
		{"Producer", ident.Producer, "!~", true},
		{"Producer", ident.Producer, strings.Repeat("p", ident.MaxProducerLen), true},
		{"Producer", ident.Producer, strings.Repeat("p", ident.MaxProducerLen+1), false},
		{"Producer", ident.Producer, "", false},
		{"Producer", ident.Producer, "two words", false},
		{"Producer", ident.Producer, "tab\there", false},
		{"Producer", ident.Producer, "del\x7f", false},
		{"Producer", ident.Producer, "café", false},

		{"Prefix", ident.Prefix, "tandem_", true},
		{"Prefix", ident.Prefix, "t0123456789abc_", true}, // MaxPrefixLen bytes
		{"Prefix", ident.Prefix, "t0123456789abcd_", false},
		{"Prefix", ident.Prefix, "", false},
		{"Prefix", ident.Prefix, "Tandem_", false},
		{"Prefix", ident.Prefix, "_tandem", false},
		{"Prefix", ident.Prefix, "1tandem", false},
		{"Prefix", ident.Prefix, "tan-dem", false},
		{"Prefix", ident.Prefix, "t;drop", false},
		{"Prefix", ident.Prefix, "t\"x", false},
		{"Prefix", ident.Prefix, "t x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.value, func(t *testing.T) {
			t.Parallel()
			field := "Config." + tt.name
			err := tt.check(field, tt.value)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.ErrorIs(t, err, ident.ErrInvalid)
			require.Contains(t, err.Error(), field, "the error names the field")
			var inv *ident.InvalidError
			require.True(t, errors.As(err, &inv))
			require.Equal(t, field, inv.Field)
			require.NotEmpty(t, inv.Reason)
		})
	}
}

// The length limit on prefixes exists so that prefixed table names fit
// Oracle's 30-character identifiers.
func TestPrefixFitsOracleIdentifiers(t *testing.T) {
	t.Parallel()
	longest := strings.Repeat("p", ident.MaxPrefixLen) + "global_revision"
	require.NoError(t, ident.Prefix("Prefix", longest[:ident.MaxPrefixLen]))
	require.LessOrEqual(t, len(longest), 30)
}

func TestInvalidErrorTruncatesValue(t *testing.T) {
	t.Parallel()
	err := ident.NodeID("NodeID", strings.Repeat("x", 1000))
	var inv *ident.InvalidError
	require.True(t, errors.As(err, &inv))
	require.Less(t, len(inv.Value), 100)
	require.Less(t, len(err.Error()), 200)
}

func TestBlobID(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	require.NoError(t, ident.BlobID("id", good))
	for bad, reason := range map[string]string{
		"":                                   "is 0 bytes long, want 64",
		good[:63]:                            "is 63 bytes long, want 64",
		good + "0":                           "is 65 bytes long, want 64",
		strings.ToUpper(good):                "byte 10 ('A') is upper case",
		"../../" + good[6:]:                  "byte 0 ('.') is not a hex digit",
		good[:32] + "/" + good[33:]:          "byte 32 ('/') is not a hex digit",
		good[:63] + "g":                      "byte 63 ('g') is not a hex digit",
		"../../../../etc/passwd" + good[:42]: "byte 0 ('.') is not a hex digit",
	} {
		err := ident.BlobID("id", bad)
		require.ErrorIs(t, err, ident.ErrInvalid, "%q", bad)
		require.ErrorContains(t, err, reason, "%q", bad)
		require.ErrorContains(t, err, "invalid id ")
	}
}
