package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cast"
	"github.com/spf13/pflag"
)

// Kind is the type of value a Setting holds.
type Kind int

// The kinds of values a setting can hold.
const (
	String Kind = iota
	StringList
	Int
	Float
	Bool
	Duration
)

// Setting declares one configuration key: its viper key, its kind and what it
// is for. Its environment variable and flag names are derived from the key.
type Setting struct {
	// Key is the viper key, e.g. "kafka.brokers" or "gateway.listen_addr".
	Key string
	// Kind is the type its value must parse as.
	Kind Kind
	// Usage is the one-line help text of its flag.
	Usage string
}

// Env is the setting's environment variable: the key upper-cased with dots as
// underscores ("gateway.listen_addr" -> "GATEWAY_LISTEN_ADDR").
func (s Setting) Env() string {
	return strings.ToUpper(strings.ReplaceAll(s.Key, ".", "_"))
}

// Flag is the setting's command-line flag: the key without its binary's
// section, dots and underscores as dashes ("worker.replay.event_type" ->
// "replay-event-type", "kafka.brokers" -> "kafka-brokers").
func (s Setting) Flag() string {
	k := s.Key
	for _, section := range []string{"gateway.", "worker."} {
		k = strings.TrimPrefix(k, section)
	}
	return strings.NewReplacer(".", "-", "_", "-").Replace(k)
}

// Name names the setting the way an operator meets it, for error messages.
func (s Setting) Name() string {
	return fmt.Sprintf("%s (flag --%s, key %s)", s.Env(), s.Flag(), s.Key)
}

// define adds the setting's flag to fs, showing def as its default.
func (s Setting) define(fs *pflag.FlagSet, def any) {
	switch s.Kind {
	case StringList:
		fs.StringSlice(s.Flag(), cast.ToStringSlice(def), s.Usage)
	case Int:
		fs.Int(s.Flag(), cast.ToInt(def), s.Usage)
	case Float:
		fs.Float64(s.Flag(), cast.ToFloat64(def), s.Usage)
	case Bool:
		fs.Bool(s.Flag(), cast.ToBool(def), s.Usage)
	case Duration:
		fs.Duration(s.Flag(), cast.ToDuration(def), s.Usage)
	default:
		fs.String(s.Flag(), cast.ToString(def), s.Usage)
	}
}

// check reports whether v parses as the setting's kind.
func (s Setting) check(v any) error {
	var err error
	switch s.Kind {
	case Int:
		_, err = cast.ToIntE(v)
	case Float:
		_, err = cast.ToFloat64E(v)
	case Bool:
		_, err = cast.ToBoolE(v)
	case Duration:
		var d time.Duration
		if str, ok := v.(string); ok {
			d, err = time.ParseDuration(str) // cast would read "abc" as "abcns"
		} else {
			d, err = cast.ToDurationE(v)
		}
		if err == nil && d < 0 {
			err = fmt.Errorf("negative duration %v", d)
		}
	}
	if err != nil {
		return fmt.Errorf("invalid setting %s: %w", s.Name(), err)
	}
	return nil
}

// fromEnv turns an environment value into the value the setting holds.
func (s Setting) fromEnv(raw string) any {
	if s.Kind != StringList {
		return raw
	}
	var out []string
	for _, part := range strings.Split(raw, ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Settings is a binary's table of settings.
type Settings []Setting

// Lookup returns the setting with the given key; it panics on an unknown key,
// which is a programming error.
func (ss Settings) Lookup(key string) Setting {
	for _, s := range ss {
		if s.Key == key {
			return s
		}
	}
	panic("config: unknown setting " + key)
}

// EnvVars lists the environment variables the binary reads, including the one
// naming a config file.
func (ss Settings) EnvVars(configFileEnv string) []string {
	out := []string{configFileEnv}
	for _, s := range ss {
		out = append(out, s.Env())
	}
	return out
}

// Required returns an error naming the setting when it is empty.
func (ss Settings) Required(key string, empty bool) error {
	if empty {
		return fmt.Errorf("missing required setting %s", ss.Lookup(key).Name())
	}
	return nil
}

// Invalid returns an error naming the setting and why its value is wrong.
func (ss Settings) Invalid(key string, format string, args ...any) error {
	return fmt.Errorf("invalid setting %s: %s", ss.Lookup(key).Name(), fmt.Sprintf(format, args...))
}
