package main

import "testing"

// TestQuickstart runs the README's first command, so it keeps working.
func TestQuickstart(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
