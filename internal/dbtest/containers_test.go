package dbtest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A Docker host that accepts connections and never answers must not stall
// the tests: the check gives up after its timeout and says why. (If an
// engine answers through one of testcontainers' fallbacks, such as the
// default socket, there is nothing to test and the test skips.)
//
// testcontainers remembers the first engine lookup of the process, so this
// test is meaningful only when it is the first to look; it runs before
// every parallel test. Otherwise it still checks that the answer is quick.
func TestProbeDockerGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	t.Setenv("DOCKER_HOST", "tcp://"+ln.Addr().String())

	start := time.Now()
	why := probeDocker(500 * time.Millisecond)
	elapsed := time.Since(start)
	if why == "" {
		t.Skip("a Docker engine answered")
	}
	require.Less(t, elapsed, 3*time.Second, "the check must give up after its timeout")
	require.Contains(t, why, "no Docker engine answered")
}

func TestEveryBackendHasAnImage(t *testing.T) {
	t.Parallel()
	for _, b := range Backends {
		img, ok := images[b.Name]
		require.True(t, ok, "no container image for backend %s", b.Name)
		require.NotEmpty(t, img.dsn("127.0.0.1:1", "pw"))
	}
}
