package acmecrm

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
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
	// ErrUnpairedSurrogate: a string escapes half of a UTF-16 surrogate
	// pair (\ud800 alone). I-JSON (RFC 7493 §2.1) forbids it: it names no
	// character, decoders replace it with U+FFFD, and two different ids
	// ("a\ud800", "a\udbff") would become one key, one URL, one
	// Idempotency-Key.
	ErrUnpairedSurrogate = errors.New("body has a string with an unpaired UTF-16 surrogate escape (I-JSON, RFC 7493)")
)

// field is one member of the event Parse reads, as found in the body.
type field struct {
	set  bool
	kind jsontext.Kind // '"' string, 'n' null, '{' object, ...
	s    string        // a string's unescaped value
}

// fields are the members of an event Parse reads.
type fields struct {
	eventType, eventID, timestamp, data  field
	contactID, first, last, email, phone field
}

// top returns the field of a top-level member, nil for the others.
func (f *fields) top(name []byte) *field {
	switch string(name) {
	case "event_type":
		return &f.eventType
	case "event_id":
		return &f.eventID
	case "timestamp":
		return &f.timestamp
	case "data":
		return &f.data
	}
	return nil
}

// inData returns the field of a member of data, nil for the others.
func (f *fields) inData(name []byte) *field {
	switch string(name) {
	case "contact_id":
		return &f.contactID
	case "acme_first_name":
		return &f.first
	case "acme_last_name":
		return &f.last
	case "acme_email":
		return &f.email
	case "acme_phone":
		return &f.phone
	}
	return nil
}

// scanner is a reusable JSON tokenizer (encoding/json/v2's jsontext): it
// checks the syntax, rejects duplicate names at every depth, and reads
// names and scalars without building a map or a value per member.
type scanner struct {
	r   bytes.Reader
	dec jsontext.Decoder
}

var scanners = sync.Pool{New: func() any { return new(scanner) }}

// scan reads body in one pass into f: a well-formed body (UTF-8, MaxDepth,
// no duplicate key) that is one JSON object. Its errors are ErrInvalidUTF8,
// ErrTooDeep, ErrDuplicateKey (wrapped) or wrap ErrNotJSONObject.
func scan(body []byte, f *fields) error {
	// Checked first, so that bad bytes are named as such wherever they are.
	if !utf8.Valid(body) {
		return ErrInvalidUTF8
	}
	s := scanners.Get().(*scanner)
	defer scanners.Put(s)
	s.r.Reset(body)
	// The bytes are valid UTF-8 (above): what the decoder still finds
	// invalid is an escaped lone surrogate.
	s.dec.Reset(&s.r, jsontext.AllowInvalidUTF8(false))
	defer s.r.Reset(nil) // do not keep the body alive in the pool
	err := s.walk(f)
	var se *jsontext.SyntacticError
	switch {
	case err == nil, errors.Is(err, ErrTooDeep), errors.Is(err, ErrNotJSONObject):
		return err
	case errors.As(err, &se) && errors.Is(err, jsontext.ErrDuplicateName):
		return fmt.Errorf("%w: %q", ErrDuplicateKey, se.JSONPointer.LastToken())
	case errors.As(err, &se) && strings.Contains(se.Err.Error(), "surrogate pair"):
		return fmt.Errorf("%w: at %s", ErrUnpairedSurrogate, cmp.Or(string(se.JSONPointer), "the top"))
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %v", ErrNotJSONObject, err)
}

// walk reads one top-level value token by token, recording the members of
// the top-level object and of its data object into f.
func (s *scanner) walk(f *fields) error {
	d := &s.dec
	var member *field // the member whose value comes next, if one is read
	object, inData := false, false
	for {
		depth := d.StackDepth()
		kind := d.PeekKind()
		if k, n := d.StackIndex(depth); k == '{' && n%2 == 0 && kind != '}' {
			name, err := d.ReadValue()
			if err != nil {
				return err
			}
			member = nil
			if depth == 1 || (depth == 2 && inData) {
				if name, err = s.unquote(name); err != nil {
					return err
				}
				if depth == 1 {
					member = f.top(name)
				} else {
					member = f.inData(name)
				}
			}
			continue
		}
		switch kind {
		case '{', '[':
			if _, err := d.ReadToken(); err != nil {
				return err
			}
			if d.StackDepth() > MaxDepth {
				return ErrTooDeep
			}
			if depth == 0 {
				object = kind == '{'
			}
			if member != nil {
				*member = field{set: true, kind: kind}
				if member == &f.data {
					inData = kind == '{'
				}
				member = nil
			}
			continue
		case '}', ']':
			if _, err := d.ReadToken(); err != nil {
				return err
			}
			if d.StackDepth() == 1 {
				inData = false
			}
		default:
			v, err := d.ReadValue()
			if err != nil {
				return err
			}
			if member != nil {
				*member = field{set: true, kind: v.Kind()}
				if member.kind == '"' {
					if member.s, err = s.unquoteString(v); err != nil {
						return err
					}
				}
				member = nil
			}
		}
		if d.StackDepth() == 0 { // the top-level value is complete
			if _, err := d.ReadToken(); err != io.EOF {
				if err == nil {
					err = errors.New("more data after the top-level value")
				}
				return err
			}
			if !object {
				return fmt.Errorf("%w: it is %s", ErrNotJSONObject, describe(kind))
			}
			return nil
		}
	}
}

// unquote returns the bytes of a JSON string without quotes, unescaped.
func (s *scanner) unquote(v jsontext.Value) ([]byte, error) {
	if bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1], nil
	}
	str, err := unescape(v)
	return []byte(str), err
}

func (s *scanner) unquoteString(v jsontext.Value) (string, error) {
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), nil
	}
	return unescape(v)
}

// unescape reads an escaped JSON string as encoding/json does (a lone
// surrogate never gets here: the decoder refused it): the rare escaped
// string is not worth a reader of its own.
func unescape(v jsontext.Value) (string, error) {
	var str string
	err := json.Unmarshal(v, &str)
	return str, err
}

// describe names the kind of a top-level value that is not an object.
func describe(k jsontext.Kind) string {
	switch k {
	case '[', ']':
		return "an array"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}
