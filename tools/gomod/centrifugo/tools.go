//go:build tools

// Package tools pins Centrifugo's command so that `go mod tidy` keeps its dependencies.
package tools

import (
	_ "github.com/centrifugal/centrifugo/v6"
)
