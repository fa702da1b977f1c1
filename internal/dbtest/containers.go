package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// A dialect whose variable is unset gets a container, when a Docker engine
// answers. Each test binary starts at most one container per dialect (dsn
// caches the result) and never stops it: testcontainers' reaper removes it
// after the binary exits. Only testcontainers' core module is used, with
// generic containers, to keep the module graph small.

const (
	// dockerTimeout bounds the check for a Docker engine, so that a machine
	// without one skips container-backed tests at once.
	dockerTimeout = 2 * time.Second
	// pullTimeout bounds pulling an image and creating its container.
	pullTimeout = 15 * time.Minute
)

// image says how to run one dialect's database in a container.
type image struct {
	ref   string            // image reference
	port  string            // the database's port inside the container
	env   map[string]string // "{pw}" in a value stands for the password
	cmd   []string          // replaces the image's command, if set
	query string            // readiness query; "SELECT 1" if empty
	ready time.Duration     // how long the database may take to accept logins
	// dsn formats the DSN, in the driver's format, for host:port.
	dsn func(hostport, pw string) string
}

var images = map[string]image{
	"postgres": {
		ref:  "postgres:16-alpine",
		port: "5432/tcp",
		env:  map[string]string{"POSTGRES_USER": "tandem", "POSTGRES_PASSWORD": "{pw}", "POSTGRES_DB": "tandem"},
		cmd:  []string{"postgres", "-c", "max_connections=400"},
		// The first start initialises the data directory.
		ready: 2 * time.Minute,
		dsn: func(hostport, pw string) string {
			u := url.URL{Scheme: "postgres", User: url.UserPassword("tandem", pw), Host: hostport,
				Path: "/tandem", RawQuery: "sslmode=disable"}
			return u.String()
		},
	},
	"mysql": {
		ref:  "mariadb:11",
		port: "3306/tcp",
		env: map[string]string{"MARIADB_USER": "tandem", "MARIADB_PASSWORD": "{pw}", "MARIADB_DATABASE": "tandem",
			"MARIADB_RANDOM_ROOT_PASSWORD": "1"},
		cmd:   []string{"--max-connections=400"}, // the entrypoint prepends mariadbd
		ready: 2 * time.Minute,
		dsn: func(hostport, pw string) string {
			return "tandem:" + pw + "@tcp(" + hostport + ")/tandem?parseTime=true"
		},
	},
	"sqlserver": {
		ref:   "mcr.microsoft.com/mssql/server:2022-latest",
		port:  "1433/tcp",
		env:   map[string]string{"ACCEPT_EULA": "Y", "MSSQL_PID": "Developer", "MSSQL_SA_PASSWORD": "{pw}"},
		ready: 3 * time.Minute,
		dsn: func(hostport, pw string) string {
			u := url.URL{Scheme: "sqlserver", User: url.UserPassword("sa", pw), Host: hostport,
				RawQuery: "database=master"}
			return u.String()
		},
	},
	"oracle": {
		ref:   "gvenzl/oracle-free:slim-faststart",
		port:  "1521/tcp",
		env:   map[string]string{"ORACLE_PASSWORD": "{pw}", "APP_USER": "tandem", "APP_USER_PASSWORD": "{pw}"},
		query: "SELECT 1 FROM DUAL",
		ready: 5 * time.Minute,
		dsn: func(hostport, pw string) string {
			u := url.URL{Scheme: "oracle", User: url.UserPassword("tandem", pw), Host: hostport, Path: "/FREEPDB1"}
			return u.String()
		},
	},
}

var (
	dockerOnce sync.Once
	dockerWhy  string
)

// dockerUnavailable says why no Docker engine can run containers, or ""
// when one answered. It asks once per test binary.
func dockerUnavailable() string {
	dockerOnce.Do(func() { dockerWhy = probeDocker(dockerTimeout) })
	return dockerWhy
}

// probeDocker asks testcontainers for a Docker engine, giving up after
// timeout. testcontainers remembers the engine it found, or its failure,
// for the rest of the process.
func probeDocker(timeout time.Duration) (why string) {
	defer func() {
		if r := recover(); r != nil {
			why = fmt.Sprintf("no Docker engine answered: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return "no Docker engine answered: testcontainers: " + strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	_ = cli.Close()
	return ""
}

// startContainer starts the named dialect's database in a container and
// returns its DSN, or "" and why it could not.
func startContainer(name string) (dsn, why string) {
	img, ok := images[name]
	if !ok {
		return "", "no container image is known for " + name
	}
	if why := dockerUnavailable(); why != "" {
		return "", why
	}
	driver := ""
	for _, b := range Backends {
		if b.Name == name {
			driver = b.Driver
		}
	}
	defer func() {
		if r := recover(); r != nil {
			dsn, why = "", fmt.Sprintf("start %s container: %v", img.ref, r)
		}
	}()

	pw := newPassword()
	env := make(map[string]string, len(img.env))
	for k, v := range img.env {
		env[k] = strings.ReplaceAll(v, "{pw}", pw)
	}
	query := img.query
	if query == "" {
		query = "SELECT 1"
	}
	// Readiness is a login and a query through the same driver the tests
	// use: log lines appear before some of these databases accept logins.
	ready := wait.ForSQL(img.port, driver, func(host string, port network.Port) string {
		return img.dsn(net.JoinHostPort(host, port.Port()), pw)
	}).WithQuery(query).WithStartupTimeout(img.ready).WithPollInterval(time.Second)
	opts := []testcontainers.ContainerCustomizer{
		testcontainers.WithExposedPorts(img.port),
		testcontainers.WithEnv(env),
		testcontainers.WithWaitStrategyAndDeadline(img.ready, ready),
	}
	if img.cmd != nil {
		opts = append(opts, testcontainers.WithCmd(img.cmd...))
	}

	ctx, cancel := context.WithTimeout(context.Background(), pullTimeout+img.ready)
	defer cancel()
	c, err := testcontainers.Run(ctx, img.ref, opts...)
	if err != nil {
		if c != nil {
			_ = testcontainers.TerminateContainer(c)
		}
		return "", fmt.Sprintf("start %s container: %v", img.ref, err)
	}
	host, err := c.Host(ctx)
	if err != nil {
		_ = testcontainers.TerminateContainer(c)
		return "", fmt.Sprintf("%s container host: %v", img.ref, err)
	}
	port, err := c.MappedPort(ctx, img.port)
	if err != nil {
		_ = testcontainers.TerminateContainer(c)
		return "", fmt.Sprintf("%s container port: %v", img.ref, err)
	}
	return img.dsn(net.JoinHostPort(host, port.Port()), pw), ""
}

// newPassword returns a random password that meets SQL Server's complexity
// rules and that Oracle accepts unquoted (it starts with a letter).
func newPassword() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "Tx1" + hex.EncodeToString(b[:])
}
