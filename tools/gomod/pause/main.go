// Command pause is the sandbox ("pause") container of Hypersend's local node: containerd's
// sandbox_image names the image made from it (tools/hypersend_devenv/images.py), so the node
// never pulls one.
//
// It holds the pod's namespaces open and does nothing else: it sleeps, reaps any child it
// inherits (it is PID 1 when the pod shares one process namespace) and exits 0 on SIGTERM or
// SIGINT. `pause -v` prints its version and exits.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set by the build with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause", version)
		return
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every child that has exited, without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
