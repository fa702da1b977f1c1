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
	fs := e.flags("nodes remove", "[--force] [--purge] ID")
	force := fs.Bool("force", false, "remove the node even if it is live (it saves its position again on its next sync)")
	purge := fs.Bool("purge", false, "delete the position instead of evicting it: a node that returns with this id then starts at the head WITHOUT a resync (only for an id retired for good)")
	pos, err := e.parse(fs, args, 1, 1)
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
	action := "evicted"
	switch {
	case *purge:
		if err := s.revs.Delete(ctx, id); err != nil {
			return err
		}
		action = "purged"
	case p.Evicted:
		action = "already_evicted"
	default:
		ev, ok := s.revs.(revision.Evicter)
		if !ok {
			return fmt.Errorf("the %s position store cannot evict a node", s.kind())
		}
		done, err := ev.Evict(ctx, id, p.Revision)
		if err != nil {
			return err
		}
		if !done {
			// The position changed since it was read: the janitor evicted
			// it, or the node saved a new one (it is running).
			q, err := s.revs.Load(ctx, id)
			switch {
			case errors.Is(err, revision.ErrNotFound):
				return withCode(exitNotFound, "no node %q: its position was deleted meanwhile", id)
			case err != nil:
				return err
			case !q.Evicted:
				return fmt.Errorf("node %q saved a new position (%d, was %d) while it was being evicted: it is running; nothing changed", id, q.Revision, p.Revision)
			}
			p, action = q, "already_evicted"
		}
	}
	if e.g.json {
		return writeJSON(e.stdout, map[string]any{"removed": id, "action": action, "position": p.Revision, "was_live": live})
	}
	switch action {
	case "purged":
		fmt.Fprintf(e.stdout, "purged node %s (position %d deleted): a node that returns with this id starts at the head without a resync\n", id, p.Revision)
	case "already_evicted":
		fmt.Fprintf(e.stdout, "node %s was evicted already (position %d): nothing changed\n", id, p.Revision)
	default:
		fmt.Fprintf(e.stdout, "evicted node %s (position %d): it no longer holds the janitor back; if it returns, it resyncs\n", id, p.Revision)
	}
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
	pos, err := e.parse(fs, args, 2, 2)
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
		return withCode(exitRefused, "node %q has a stored position already (evicted or not): delete it first (tandem nodes remove --purge %s)", to, to)
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
