// Command etcd is the etcd server built from go.etcd.io/etcd/server/v3 at the
// version Kubernetes itself requires (etcd's own main package lives in a module
// we do not need, so this one-line main stands in for it).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
