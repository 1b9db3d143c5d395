//go:build tools

// Package tools pins prometheus-adapter's command so that `go mod tidy` keeps its dependencies.
// (`go install ...@v0.12.0` fails: the proxy serves no version list for the module; a module
// that requires the version and builds the package works.)
package tools

import (
	_ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
)
