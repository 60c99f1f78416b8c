package acmecrm

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The event types AcmeCRM sends.
const (
	ContactCreated = "contact.created"
	ContactUpdated = "contact.updated"
	ContactDeleted = "contact.deleted"
)

// KnownType reports whether t is one of the event types above.
func KnownType(t string) bool {
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

// Contact is the data of an event, in AcmeCRM's field names.
type Contact struct {
	ContactID string `json:"contact_id"`
	FirstName string `json:"acme_first_name"`
	LastName  string `json:"acme_last_name"`
	Email     string `json:"acme_email"`
	Phone     string `json:"acme_phone"`
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

// optionalStrings are the contact fields that, when present, must be strings
// (or null): the worker copies them into the Contacts API.
var optionalStrings = []string{"acme_first_name", "acme_last_name", "acme_email", "acme_phone"}

// Parse checks body against the rules of an AcmeCRM event and returns the
// event. The error is ErrInvalidUTF8, ErrTooDeep or wraps ErrDuplicateKey
// when the body is not well-formed for an event, wraps ErrNotJSONObject
// when it is not a JSON object, and is a *ValidationError when the object
// breaks the rules.
func Parse(body []byte) (Event, error) {
	if err := wellFormed(body); err != nil {
		return Event{}, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		if err == nil {
			err = errors.New("null")
		}
		return Event{}, fmt.Errorf("%w: %v", ErrNotJSONObject, err)
	}
	var ev Event
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	ev.EventType, problems = requiredString(top, "", "event_type", problems)
	if ev.EventType != "" && !KnownType(ev.EventType) {
		add("event_type %q is not one of %s, %s, %s", ev.EventType, ContactCreated, ContactUpdated, ContactDeleted)
	}
	ev.EventID, problems = requiredString(top, "", "event_id", problems)
	var ts string
	if ts, problems = requiredString(top, "", "timestamp", problems); ts != "" {
		// RFC 3339 (§5.6) allows a lowercase t and z; Go's layout wants them upper.
		t, err := time.Parse(time.RFC3339Nano, strings.Map(func(r rune) rune {
			if r == 't' || r == 'z' {
				return r - 'a' + 'A'
			}
			return r
		}, ts))
		if err != nil {
			add("timestamp %q is not RFC 3339", ts)
		}
		ev.Timestamp = t
	}

	var data map[string]json.RawMessage
	if raw, ok := top["data"]; !ok {
		add("data is missing")
	} else if err := json.Unmarshal(raw, &data); err != nil || data == nil {
		add("data is not an object")
	} else {
		ev.Data.ContactID, problems = requiredString(data, "data.", "contact_id", problems)
		fields := []*string{&ev.Data.FirstName, &ev.Data.LastName, &ev.Data.Email, &ev.Data.Phone}
		for i, name := range optionalStrings {
			raw, ok := data[name]
			if !ok || string(raw) == "null" {
				continue
			}
			if err := json.Unmarshal(raw, fields[i]); err != nil {
				add("data.%s is not a string", name)
			}
		}
	}
	if problems != nil {
		return ev, &ValidationError{Problems: problems}
	}
	return ev, nil
}

// requiredString reads a non-empty string field of obj, or notes why not.
func requiredString(obj map[string]json.RawMessage, prefix, name string, problems []string) (string, []string) {
	raw, ok := obj[name]
	name = prefix + name
	if !ok {
		return "", append(problems, name+" is missing")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", append(problems, name+" is not a string")
	}
	if strings.TrimSpace(s) == "" {
		return "", append(problems, name+" is empty")
	}
	return s, problems
}
