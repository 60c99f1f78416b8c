// Package configs holds the default settings of both binaries. The YAML files
// beside this file are embedded, so a binary has its defaults wherever it runs;
// a file given with --config, environment variables and flags override them.
package configs

import _ "embed"

// Gateway is the default configuration of webhook-gateway (gateway.yaml).
//
//go:embed gateway.yaml
var Gateway []byte

// Worker is the default configuration of contact-worker (worker.yaml).
//
//go:embed worker.yaml
var Worker []byte
