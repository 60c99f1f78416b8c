// Package config provides the settings of both binaries, loaded with viper in
// four layers, each overriding the one before: the defaults embedded from
// configs/, an optional YAML file (--config), environment variables and flags.
//
// Every setting is declared once, in a Setting table; its environment
// variable and flag names are derived from its key, so the documentation, the
// Helm chart's tests and the binaries cannot disagree about them.
package config
