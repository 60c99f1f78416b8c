package acmecrm

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// The event types AcmeCRM sends.
const (
	ContactCreated = "contact.created"
	ContactUpdated = "contact.updated"
	ContactDeleted = "contact.deleted"
)

// knownType reports whether t is one of the event types above.
func knownType(t string) bool {
	return t == ContactCreated || t == ContactUpdated || t == ContactDeleted
}

// Event is an AcmeCRM contact event. Fields AcmeCRM may add are not listed
// here; the gateway forwards the body byte for byte, so they are kept.
type Event struct {
	EventType string    `json:"event_type"`
	EventID   string    `json:"event_id"`
	Timestamp time.Time `json:"timestamp"`
	Data      Contact   `json:"data"`
}

// Known reports whether e's type is one this service knows how to apply.
// An event of another type (one AcmeCRM adds tomorrow) is well-formed:
// the gateway accepts it, the worker dead-letters it as unsupported, to be
// replayed by a release that supports it.
func (e Event) Known() bool { return knownType(e.EventType) }

// UnknownTypeProblem says why an event of an unknown type is refused where
// the strict rule holds (GATEWAY_STRICT_EVENT_TYPES).
func UnknownTypeProblem(t string) string {
	return fmt.Sprintf("event_type %q is not one of %s, %s, %s", t, ContactCreated, ContactUpdated, ContactDeleted)
}

// Contact is the data of an event, in AcmeCRM's field names.
type Contact struct {
	ContactID string `json:"contact_id"`
	FirstName string `json:"acme_first_name"`
	LastName  string `json:"acme_last_name"`
	Email     string `json:"acme_email"`
	Phone     string `json:"acme_phone"`
}

// MaxIdentifierBytes bounds event_id and data.contact_id: the contact id
// is a Kafka key and a URL path segment, the event id an Idempotency-Key
// header, in every system the event reaches.
const MaxIdentifierBytes = 255

// identifierProblem says why id cannot be carried as it is, "" when it
// can. Every identifier: at most MaxIdentifierBytes bytes, no control
// character (C0, DEL, C1: not allowed in an HTTP field value, RFC 9110
// §5.5, and invisible in logs). A contact id (segment) is also one URL path
// segment of the Contacts API as it is: no "/" or "\" (proxies and
// servers decode %2F and split on it, or treat "\" as "/"), and not "."
// or ".." (dot-segments, RFC 3986 §5.2.4, which clients and proxies
// remove).
func identifierProblem(id string, segment bool) string {
	if len(id) > MaxIdentifierBytes {
		return fmt.Sprintf("is %d bytes, more than %d", len(id), MaxIdentifierBytes)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return fmt.Sprintf("holds the control character %U", r)
		}
		if segment && (r == '/' || r == '\\') {
			return fmt.Sprintf("holds %q: it must be one URL path segment", r)
		}
	}
	if segment && (id == "." || id == "..") {
		return fmt.Sprintf("is %q, a dot-segment (RFC 3986) that HTTP clients remove from a URL", id)
	}
	return ""
}

// ErrNotJSONObject means the body is not a JSON object at all (400).
var ErrNotJSONObject = errors.New("body is not a JSON object")

// ValidationError lists the rules a JSON object breaks (422).
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return "invalid event: " + strings.Join(e.Problems, "; ")
}

// Parse checks body against the rules of an AcmeCRM event and returns the
// event. The error is ErrInvalidUTF8, ErrTooDeep or wraps ErrDuplicateKey
// when the body is not well-formed for an event, wraps ErrNotJSONObject
// when it is not a JSON object, and is a *ValidationError when the object
// breaks the rules (the event then holds what could be read, its id
// included).
func Parse(body []byte) (Event, error) {
	var f fields
	if err := scan(body, &f); err != nil {
		return Event{}, err
	}
	var ev Event
	var problems []string
	// str returns a required member that is a non-empty string, or notes
	// why it is not. (A null is empty, as encoding/json read it.)
	str := func(f field, name string) string {
		switch {
		case !f.set:
			problems = append(problems, name+" is missing")
		case f.kind != '"' && f.kind != 'n':
			problems = append(problems, name+" is not a string")
		case strings.TrimSpace(f.s) == "":
			problems = append(problems, name+" is empty")
		default:
			return f.s
		}
		return ""
	}
	ev.EventType = str(f.eventType, "event_type")
	ev.EventID = str(f.eventID, "event_id")
	if ev.EventID != "" {
		if why := identifierProblem(ev.EventID, false); why != "" {
			problems = append(problems, "event_id "+why)
		}
	}
	if ts := str(f.timestamp, "timestamp"); ts != "" {
		// RFC 3339 (§5.6) allows a lowercase t and z; Go's layout wants them upper.
		t, err := time.Parse(time.RFC3339Nano, strings.Map(func(r rune) rune {
			if r == 't' || r == 'z' {
				return r - 'a' + 'A'
			}
			return r
		}, ts))
		if err != nil {
			problems = append(problems, fmt.Sprintf("timestamp %q is not RFC 3339", ts))
		}
		ev.Timestamp = t
	}
	switch {
	case !f.data.set:
		problems = append(problems, "data is missing")
	case f.data.kind != '{':
		problems = append(problems, "data is not an object")
	default:
		ev.Data.ContactID = str(f.contactID, "data.contact_id")
		if ev.Data.ContactID != "" {
			if why := identifierProblem(ev.Data.ContactID, true); why != "" {
				problems = append(problems, "data.contact_id "+why)
			}
		}
		// The names are optional: absent or null, they are empty.
		for _, o := range []struct {
			f    field
			name string
			to   *string
		}{
			{f.first, "data.acme_first_name", &ev.Data.FirstName}, {f.last, "data.acme_last_name", &ev.Data.LastName},
			{f.email, "data.acme_email", &ev.Data.Email}, {f.phone, "data.acme_phone", &ev.Data.Phone},
		} {
			switch o.f.kind {
			case '"':
				*o.to = o.f.s
			case 0, 'n':
			default:
				problems = append(problems, o.name+" is not a string")
			}
		}
	}
	if problems != nil {
		return ev, &ValidationError{Problems: problems}
	}
	return ev, nil
}
