//go:build tools

// Package tools pins Prometheus's command so that `go mod tidy` keeps its dependencies.
// (Debian's prometheus package is built without Kubernetes service discovery.)
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
