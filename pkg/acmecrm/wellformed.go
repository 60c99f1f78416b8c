package acmecrm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// MaxDepth is how deeply a body's JSON may nest: the event is an object
// holding one object (data); 16 leaves AcmeCRM room for nested additions,
// while far deeper bodies, which other consumers' parsers refuse or choke
// on, are refused here.
const MaxDepth = 16

// The ways a body is not well-formed JSON for an event (400).
var (
	// ErrInvalidUTF8: JSON between systems is UTF-8 (RFC 8259 §8.1); Go's
	// decoder would silently turn bad bytes into U+FFFD while a Java or
	// Python consumer of the same record fails.
	ErrInvalidUTF8 = errors.New("body is not valid UTF-8")
	// ErrTooDeep: nested deeper than MaxDepth.
	ErrTooDeep = fmt.Errorf("body nests deeper than %d levels", MaxDepth)
	// ErrDuplicateKey: an object names a member twice. I-JSON (RFC 7493)
	// forbids it, and parsers disagree on which one wins: a body read one
	// way here and another way by another consumer is a known attack.
	ErrDuplicateKey = errors.New("body has an object with a duplicate key")
)

// wellFormed checks what json.Unmarshal lets through: UTF-8, depth and
// duplicate keys, in one pass over the tokens.
func wellFormed(body []byte) error {
	if !utf8.Valid(body) {
		return ErrInvalidUTF8
	}
	type frame struct {
		object   bool
		atKey    bool // the next string is a key
		keys     map[string]struct{}
		keyCount int
	}
	var stack []frame
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return nil // syntax errors are reported by the parse that follows
		}
		top := len(stack) - 1
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top >= 0 && stack[top].object {
					stack[top].atKey = true
				}
				if len(stack) == MaxDepth {
					return ErrTooDeep
				}
				stack = append(stack, frame{object: t == '{', atKey: t == '{'})
			default:
				stack = stack[:top]
			}
			continue
		case string:
			if top >= 0 && stack[top].object && stack[top].atKey {
				f := &stack[top]
				if f.keys == nil {
					f.keys = map[string]struct{}{}
				}
				if _, dup := f.keys[t]; dup {
					return fmt.Errorf("%w: %q", ErrDuplicateKey, t)
				}
				f.keys[t] = struct{}{}
				f.atKey = false
				continue
			}
		}
		if top >= 0 && stack[top].object {
			stack[top].atKey = true // a value ends; a key comes next
		}
	}
}
