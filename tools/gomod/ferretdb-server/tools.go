//go:build tools

// Package tools makes `go mod tidy` keep FerretDB's own command, which images.py builds as the
// server of the local MongoDB-wire image (unlike the embeddable package, the command can turn on
// FerretDB's SCRAM authentication and create the initial user).
package tools

import _ "github.com/FerretDB/FerretDB/cmd/ferretdb"
