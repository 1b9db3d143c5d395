// Command kwok-stages prints the default Stage objects that kwokctl gives kwok
// (node initialize, node heartbeat with lease, pod ready/complete/delete), taken
// from kwok's own embedded YAML at the pinned version. A standalone kwok has no
// stages unless its --config names them; the local cluster writes this output
// to a config file.
package main

import (
	"fmt"
	"strings"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodelease "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
)

func main() {
	for _, stage := range []string{
		nodefast.DefaultNodeInit,
		nodelease.DefaultNodeHeartbeatWithLease,
		podfast.DefaultPodReady,
		podfast.DefaultPodComplete,
		podfast.DefaultPodDelete,
	} {
		fmt.Println("---")
		fmt.Println(strings.TrimRight(stage, "\n"))
	}
}
