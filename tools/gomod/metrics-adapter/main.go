// Command metrics-adapter is the test adapter of sigs.k8s.io/custom-metrics-apiserver
// (its in-memory provider, unchanged) with one difference: upstream's main listens for
// metric writes on a fixed ":8080" on every interface, which collides between test runs
// and leaves loopback. Here the write endpoint listens on --write-metrics-address.
package main

import (
	"context"
	"net/http"
	"os"
	"time"

	"github.com/emicklei/go-restful/v3"
	"k8s.io/component-base/logs"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver/metrics"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	fakeprov "sigs.k8s.io/custom-metrics-apiserver/test-adapter/provider"
)

func main() {
	logs.InitLogs()
	defer logs.FlushLogs()

	cmd := &basecmd.AdapterBase{Name: "test-adapter"}
	var writeAddress string
	cmd.Flags().StringVar(&writeAddress, "write-metrics-address", "127.0.0.1:8080",
		"host:port of the plain-HTTP endpoint that accepts POST /write-metrics/...")
	logs.AddFlags(cmd.Flags())
	if err := cmd.Flags().Parse(os.Args); err != nil {
		klog.Fatalf("unable to parse flags: %v", err)
	}

	client, err := cmd.DynamicClient()
	if err != nil {
		klog.Fatalf("unable to construct dynamic client: %v", err)
	}
	mapper, err := cmd.RESTMapper()
	if err != nil {
		klog.Fatalf("unable to construct discovery REST mapper: %v", err)
	}
	provider, webService := fakeprov.NewFakeProvider(client, mapper)
	cmd.WithCustomMetrics(provider)
	cmd.WithExternalMetrics(provider)

	if err := metrics.RegisterMetrics(legacyregistry.Register); err != nil {
		klog.Fatalf("unable to register metrics: %v", err)
	}

	container := restful.NewContainer()
	container.Add(webService)
	go func() {
		server := &http.Server{Addr: writeAddress, Handler: container, ReadHeaderTimeout: 3 * time.Second}
		klog.Fatal(server.ListenAndServe())
	}()
	if err := cmd.Run(context.Background()); err != nil {
		klog.Fatalf("unable to run custom metrics adapter: %v", err)
	}
}
