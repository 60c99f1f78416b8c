// Package logging provides the zerolog loggers of both binaries: JSON lines
// in production, a human-friendly console format for local runs.
//
// It offers New, the logger of a binary from its Log settings.
package logging
