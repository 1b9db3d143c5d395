//go:build tools

// Package tools pins CoreDNS's command so that `go mod tidy` keeps its dependencies.
package tools

import (
	_ "github.com/coredns/coredns"
)
