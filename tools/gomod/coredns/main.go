// Command coredns is CoreDNS with only the plugins the local node's Corefile uses
// (tools/hypersend_devenv/node.py): CoreDNS's own command links every plugin, cloud SDKs
// included, and takes several times longer to build. This is CoreDNS's documented way to
// compose a server from its plugins.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
	"github.com/coredns/coredns/coremain"
)

func main() {
	// Execution order, as in CoreDNS's plugin.cfg.
	if err := dnsserver.SetDirectives([]string{"bind", "ready", "errors", "cache", "kubernetes"}); err != nil {
		panic(err)
	}
	coremain.Run()
}
