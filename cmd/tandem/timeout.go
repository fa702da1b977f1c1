package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// pace is how --timeout applies to a command.
type pace int

const (
	// quick: --timeout (default defaultTimeout) bounds the whole command.
	quick pace = iota
	// bulk: the same, with the longer defaultBulkTimeout: the command
	// reads or deletes in bulk.
	bulk
	// paced: the command runs until interrupted (status --watch, journal
	// tail -f) and bounds each step itself with within; run without
	// those flags, it calls limitRun.
	paced
)

// Defaults of --timeout.
const (
	defaultTimeout     = time.Minute
	defaultBulkTimeout = time.Hour
)

// timeoutFlag is --timeout: a duration, 0 for no limit.
type timeoutFlag struct {
	d   time.Duration
	set bool
}

func (f *timeoutFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return f.d.String()
}

func (f *timeoutFlag) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("want a duration such as 30s, or 0 for no limit, got %q", v)
	}
	f.d, f.set = d, true
	return nil
}

// timeout is the --timeout in force: the flag's, else the command's
// default. 0 means none.
func (e *env) timeout() time.Duration {
	switch {
	case e.g.timeout.set:
		return e.g.timeout.d
	case e.pace == bulk:
		return defaultBulkTimeout
	}
	return defaultTimeout
}

// timeoutError is the cause of a context that --timeout ended.
type timeoutError struct{ d time.Duration }

func (t *timeoutError) Error() string {
	return fmt.Sprintf("--timeout %v reached: the store did not answer in time (a larger --timeout, or 0, waits longer)", t.d)
}

// limitRun starts the --timeout of the whole command: when it passes,
// the command's context ends. It is called once the flags are parsed.
func (e *env) limitRun() {
	d := e.timeout()
	if d <= 0 || e.deadline != nil {
		return
	}
	e.deadline = time.AfterFunc(d, func() { e.stopRun(&timeoutError{d}) })
}

// stepper is how a command that may be paced (status --watch, journal
// tail -f) runs its steps: with paced, each step is bounded by --timeout
// (within); otherwise --timeout bounds the whole command from now
// (limitRun) and a step just runs.
func (e *env) stepper(paced bool) func(context.Context, func(context.Context) error) error {
	if paced {
		return e.within
	}
	e.limitRun()
	return func(ctx context.Context, f func(context.Context) error) error { return f(ctx) }
}

// within runs one step of a paced command (a refresh, a poll) bounded by
// --timeout, and says so in the error when the timeout ended it.
func (e *env) within(ctx context.Context, step func(ctx context.Context) error) error {
	d := e.timeout()
	if d <= 0 {
		return step(ctx)
	}
	sctx, cancel := context.WithTimeoutCause(ctx, d, &timeoutError{d})
	defer cancel()
	return timedOut(ctx, sctx, step(sctx))
}

// timedOut returns err, or, when --timeout ended ctx (derived from
// parent) and with it the work that failed with err, an error that says
// the timeout was reached. It ends the command with exit code 1.
func timedOut(parent, ctx context.Context, err error) error {
	var t *timeoutError
	if err == nil || parent.Err() != nil || !errors.As(context.Cause(ctx), &t) {
		return err
	}
	if errors.As(err, &t) {
		return err // said already, by an inner step
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("%w; %w", t, err)}
}
