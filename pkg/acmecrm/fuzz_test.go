package acmecrm

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse: whatever the body, Parse never panics, and what it accepts
// obeys the rules: valid UTF-8, a type, non-empty ids that can be carried
// as they are (no control character, a contact id that is one path
// segment), a timestamp, no deeper than MaxDepth, no lone surrogate; its result agrees with encoding/json's reading
// of the same body; and a body it accepts, re-encoded from the event, is
// accepted again with the same event.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"event_type":"contact.created","event_id":"evt_12345","timestamp":"2025-05-17T17:06:39-07:00","data":{"contact_id":"1234","acme_first_name":"John","acme_last_name":"Doe","acme_email":"john.doe@example.com","acme_phone":"555-123-4567"}}`,
		`{"event_type":"contact.deleted","event_id":"e","timestamp":"2025-05-17t17:06:39z","data":{"contact_id":"1"},"extra":{"a":[1,2,{"b":null}]}}`,
		`{"event_type":"contact.updated","event_id":"e","event_id":"f","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`,
		`{"event_type":"contact.updated","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1","acme_first_name":"Jo\xffhn"}}`,
		`[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]`, `{}`, `null`, `"x"`, ``, `{"data":[]}`,
		`{"event_type":"contact.merged","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`,
		`{"event_type":"contact.updated","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"sur\ud800"}}`,
		`{"event_type":"contact.updated","event_id":"e\ud83d\ude00","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"\udc00"}}`,
		`{"event_type":"contact.updated","event_id":"e\u0000","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"a/b"}}`,
		`{"event_type":"contact.updated","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":".."}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := Parse(body)
		// Syntax as encoding/json reads it: a JSON object is never refused
		// as not one, and invalid JSON is never taken for an object.
		valid := json.Valid(body)
		var invalid *ValidationError
		if errors.Is(err, ErrNotJSONObject) && valid && bytes.TrimLeft(body, " \t\r\n")[0] == '{' {
			t.Fatalf("refused the JSON object %q as not one: %v", body, err)
		}
		if !valid && (err == nil || errors.As(err, &invalid)) {
			t.Fatalf("took invalid JSON %q for an object: %v", body, err)
		}
		if err != nil {
			if !errors.As(err, &invalid) && !errors.Is(err, ErrNotJSONObject) && !errors.Is(err, ErrInvalidUTF8) &&
				!errors.Is(err, ErrTooDeep) && !errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrUnpairedSurrogate) {
				t.Fatalf("error of no documented kind: %v", err)
			}
			return
		}
		if !utf8.Valid(body) || strings.TrimSpace(ev.EventType) == "" || strings.TrimSpace(ev.EventID) == "" ||
			strings.TrimSpace(ev.Data.ContactID) == "" || ev.Timestamp.IsZero() ||
			identifierProblem(ev.EventID, false) != "" || identifierProblem(ev.Data.ContactID, true) != "" ||
			strings.ContainsRune(ev.EventID+ev.Data.ContactID+ev.Data.FirstName, utf8.RuneError) && !bytes.Contains(body, []byte("\ufffd")) && !bytes.ContainsRune(body, utf8.RuneError) {
			t.Fatalf("accepted %q as %+v", body, ev)
		}
		var plain struct {
			EventType string `json:"event_type"`
			EventID   string `json:"event_id"`
			Data      struct {
				ContactID string `json:"contact_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &plain); err != nil || plain.EventType != ev.EventType || plain.EventID != ev.EventID || plain.Data.ContactID != ev.Data.ContactID {
			t.Fatalf("encoding/json reads %q as %+v (%v), Parse as %+v", body, plain, err, ev)
		}
		again, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		ev2, err := Parse(again)
		if err != nil || ev2.EventID != ev.EventID || ev2.EventType != ev.EventType || ev2.Data != ev.Data || !ev2.Timestamp.Equal(ev.Timestamp) {
			t.Fatalf("re-encoded %s parses as %+v (%v), want %+v", again, ev2, err, ev)
		}
	})
}
