package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// ErrHelp is returned by LoadGateway and LoadWorker when --help was asked for; the usage has been
// written and the binary should exit 0.
var ErrHelp = pflag.ErrHelp

// source is what one binary's configuration is loaded from.
type source struct {
	binary        string // binary name, for usage
	file          string // name of the defaults file in configs/
	defaults      []byte // embedded YAML defaults
	settings      Settings
	configFileEnv string // environment variable naming an extra YAML file
}

// load fills out (a struct with mapstructure tags) from the four layers:
// embedded defaults < --config file < environment < flags.
func (src source) load(args []string, getenv func(string) string, usage io.Writer, out any) error {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(src.defaults)); err != nil {
		return fmt.Errorf("reading embedded defaults: %w", err)
	}

	fs := pflag.NewFlagSet(src.binary, pflag.ContinueOnError)
	fs.SetOutput(usage)
	configFile := fs.String("config", "", "YAML file overriding the defaults (env "+src.configFileEnv+")")
	for _, s := range src.settings {
		if !v.IsSet(s.Key) {
			return fmt.Errorf("setting %s has no default in configs/%s", s.Key, src.file)
		}
		s.define(fs, v.Get(s.Key))
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	if *configFile == "" {
		*configFile = getenv(src.configFileEnv)
	}
	if *configFile != "" {
		v.SetConfigFile(*configFile)
		if err := v.MergeInConfig(); err != nil {
			return fmt.Errorf("reading config file %s: %w", *configFile, err)
		}
	}

	env := map[string]any{}
	for _, s := range src.settings {
		if raw := getenv(s.Env()); raw != "" {
			setNested(env, s.Key, s.fromEnv(raw))
		}
	}
	if err := v.MergeConfigMap(env); err != nil {
		return fmt.Errorf("applying environment: %w", err)
	}

	for _, s := range src.settings {
		if err := v.BindPFlag(s.Key, fs.Lookup(s.Flag())); err != nil {
			return fmt.Errorf("binding flag --%s: %w", s.Flag(), err)
		}
		if err := s.check(v.Get(s.Key)); err != nil {
			return err
		}
	}
	if err := v.Unmarshal(out); err != nil {
		return fmt.Errorf("decoding settings: %w", err)
	}
	return nil
}

// setNested sets m["a"]["b"]["c"] = val for the key "a.b.c".
func setNested(m map[string]any, key string, val any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = val
}

// IsHelp reports whether err is the request for --help.
func IsHelp(err error) bool { return errors.Is(err, ErrHelp) }
