// Package clusterhttp puts a tandem node behind HTTP: read-your-writes
// across replicas without sticky sessions, and a health check.
//
// # Read-your-writes
//
// A write served by one replica publishes a record (cluster.Node.Publish,
// cluster.Cache.Invalidate) and returns its revision. The client's next
// request may reach any replica, which must first apply that revision, or
// it may serve what the write replaced. The middleware carries the revision
// in a header:
//
//	rw, err := clusterhttp.New(node, clusterhttp.Config{})
//	http.ListenAndServe(addr, rw.Wrap(mux))
//
//	// in a handler, after the change is committed
//	rev, err := users.Invalidate(r.Context(), id)
//	clusterhttp.Published(r.Context(), rev)
//	w.WriteHeader(http.StatusNoContent) // carries Tandem-Revision: <epoch>:<rev>
//
// The client keeps the last token it received and sends it with its next
// requests (the same header); whichever replica serves one waits until it
// has applied the token's revision (cluster.Node.WaitFor), at most
// Config.WaitTimeout, before the handler runs; a revision it has applied
// already costs neither a wait nor a query. Every response to a request
// with a valid token carries a token again — the higher of the request's
// and what the handler published — so a client can simply echo the last
// header it saw.
//
// A token is "<epoch>:<revision>": the journal's epoch (cluster.Stats.Epoch)
// and a revision in it. Revisions of different journals (a restored
// database, a recreated folder) are unrelated numbers, so:
//
//   - a token whose epoch is not the journal's current one is ignored at
//     once: the request is served without waiting, as if it had carried
//     none, and the response carries no token unless the handler published
//     (then the new journal's). Waiting would be pointless — the revision
//     may never come, or mean something else — and refusing would lock out
//     a client until it forgot its token. A token of the journal before a
//     restore that this replica has not noticed yet carries the epoch the
//     replica still knows: its wait makes the replica sync, which finds the
//     new journal, and the token is ignored then, never sent back with
//     the new journal's epoch. Telling an old token from one of a new
//     journal that this replica has not noticed yet takes a query of the
//     journal's epoch; an answer that the journal is still at the
//     replica's epoch stands for a second (while the replica's epoch
//     stays the same), so that a client sending an old or made-up token
//     costs at most one query a second, not one per request. Within that
//     second after a restore, a token of the new journal may be ignored
//     by a replica that has not synced since;
//   - a token that does not parse is a client error: 400 Bad Request, the
//     handler does not run;
//   - a wait that runs out — this replica is behind, or cannot apply a
//     record (cluster.Stats.Stuck), or is not a member — is 503 Service
//     Unavailable with a Retry-After header, and the handler does not run.
//     A load balancer can retry the request on another replica. A token of
//     this journal with a revision that does not exist (forged, or issued
//     before a restore that kept the epoch) holds its request for
//     WaitTimeout too: keep WaitTimeout short, a second or two.
//
// # Health
//
// Health returns a handler that reports, as JSON, whether the node is
// running, holds its membership, how far it lags and whether a handler is
// stuck at a record: 200 when the node is ready to serve, 503 otherwise. Use
// it as a readiness check.
package clusterhttp
