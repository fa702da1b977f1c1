package clusterhttp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/clusterhttp"
)

// Two replicas behind a load balancer without affinity: a write on one
// returns a token, and the other serves the client's next request only
// once it has applied that write.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "clusterhttp-example-")
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.DiscardHandler)

	replica := func(id string) (*cluster.Node, *cluster.Cache[string, string], http.Handler) {
		n, _ := cluster.OpenDir(ctx, cluster.Config{Dir: dir, NodeID: id, Logger: quiet})
		users, _ := cluster.NewCache[string, string](n, "users", cluster.CacheConfig[string]{})
		_ = n.Start(ctx)
		rw, _ := clusterhttp.New(n, clusterhttp.Config{Logger: quiet})
		mux := http.NewServeMux()
		mux.HandleFunc("PUT /users/{id}", func(w http.ResponseWriter, r *http.Request) {
			// ... update the user in the database, then:
			rev, err := users.Invalidate(r.Context(), r.PathValue("id"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			clusterhttp.Published(r.Context(), rev)
			w.WriteHeader(http.StatusNoContent)
		})
		mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "revision %d applied", n.Stats().Revision)
		})
		return n, users, rw.Wrap(mux)
	}
	a, _, ha := replica("web-1")
	defer a.Stop(ctx)
	b, _, hb := replica("web-2")
	defer b.Stop(ctx)

	w := httptest.NewRecorder()
	ha.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/users/42", nil))
	token := w.Header().Get(clusterhttp.DefaultHeader)
	_, rev, _ := clusterhttp.ParseToken(token)
	fmt.Println("write:", w.Code, "revision", rev)

	r := httptest.NewRequest(http.MethodGet, "/users/42", nil)
	r.Header.Set(clusterhttp.DefaultHeader, token) // the client echoes it
	w = httptest.NewRecorder()
	hb.ServeHTTP(w, r)
	fmt.Println("read on the other replica:", w.Code, w.Body.String())
	// Output:
	// write: 204 revision 1
	// read on the other replica: 200 revision 1 applied
}
