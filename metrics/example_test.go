package metrics_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/metrics"
)

// Register a node's collector; serve reg with promhttp.HandlerFor on
// /metrics.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "metrics-example-")
	defer os.RemoveAll(dir)
	n, _ := cluster.OpenDir(ctx, cluster.Config{Dir: dir, NodeID: "web-1", Logger: slog.New(slog.DiscardHandler)})
	_ = n.Start(ctx)
	defer n.Stop(ctx)

	c, err := metrics.New(metrics.Config{Node: n})
	if err != nil {
		panic(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "tandem_node_member" {
			m := mf.GetMetric()[0]
			fmt.Println(mf.GetName(), m.GetLabel()[0].GetName(), m.GetLabel()[0].GetValue(), m.GetGauge().GetValue())
		}
	}
	// Output:
	// tandem_node_member node web-1 1
}
