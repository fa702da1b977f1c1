package clusterhttp_test

import (
	"testing"

	"github.com/tandem-go/tandem/internal/dbtest"
)

func TestMain(m *testing.M) { dbtest.VerifyNoLeaks(m) }
