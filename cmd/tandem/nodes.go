package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

func runNodesRemove(ctx context.Context, e *env, args []string) error {
	fs := e.flags("nodes remove", "[--force] ID")
	force := fs.Bool("force", false, "remove the node's position even if it is live (it saves it again on its next sync)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	id := pos[0]
	if err := ident.NodeID("ID", id); err != nil {
		return usageError("%v", err)
	}
	s, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	live, err := s.live(ctx, id)
	if err != nil {
		return err
	}
	p, err := s.revs.Load(ctx, id)
	switch {
	case errors.Is(err, revision.ErrNotFound):
		if live {
			return withCode(exitRefused, "node %q is live and has no stored position yet: nothing to remove", id)
		}
		return withCode(exitNotFound, "no node %q: it has no stored position", id)
	case err != nil:
		return err
	case live && !*force:
		return withCode(exitRefused, "node %q is live (it holds its membership lease): stop it first, or use --force", id)
	}
	if err := s.revs.Delete(ctx, id); err != nil {
		return err
	}
	if e.g.json {
		return writeJSON(e.stdout, map[string]any{"removed": id, "position": p.Revision, "was_live": live})
	}
	fmt.Fprintf(e.stdout, "removed node %s (position %d)\n", id, p.Revision)
	if live {
		fmt.Fprintf(e.stderr, "tandem: nodes remove: warning: node %s is live; it saves its position again on its next sync\n", id)
	}
	return nil
}

// live reports whether node id holds its membership lease now.
func (s *store) live(ctx context.Context, id string) (bool, error) {
	leases, err := s.ls.List(ctx)
	if err != nil {
		return false, err
	}
	for _, l := range leases {
		if l.Name == lock.MemberLease(id) {
			return l.Held, nil
		}
	}
	return false, nil
}

func runNodesClone(ctx context.Context, e *env, args []string) error {
	fs := e.flags("nodes clone", "FROM TO")
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	from, to := pos[0], pos[1]
	if err := ident.NodeID("FROM", from); err != nil {
		return usageError("%v", err)
	}
	if err := ident.NodeID("TO", to); err != nil {
		return usageError("%v", err)
	}
	if from == to {
		return usageError("FROM and TO are the same node")
	}
	s, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	err = s.revs.Copy(ctx, from, to)
	switch {
	case errors.Is(err, revision.ErrNotFound):
		return withCode(exitNotFound, "no node %q: it has no stored position to clone", from)
	case errors.Is(err, revision.ErrExists):
		return withCode(exitRefused, "node %q has a stored position already: remove it first (tandem nodes remove %s)", to, to)
	case err != nil:
		return err
	}
	p, err := s.revs.Load(ctx, to)
	if err != nil {
		return err
	}
	if e.g.json {
		return writeJSON(e.stdout, map[string]any{"from": from, "to": to, "position": p.Revision})
	}
	fmt.Fprintf(e.stdout, "node %s starts at position %d, as %s\n", to, p.Revision, from)
	return nil
}
