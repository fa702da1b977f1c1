package datastore_test

import (
	"io"
	"log/slog"
	"testing"

	"github.com/tandem-go/tandem/internal/dbtest"
)

func TestMain(m *testing.M) { dbtest.VerifyNoLeaks(m) }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
