package acmecrm

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const sample = `{"event_type":"contact.created","event_id":"evt_12345","timestamp":"2025-05-17T17:06:39-07:00",
 "data":{"contact_id":"1234","acme_first_name":"John","acme_last_name":"Doe",
         "acme_email":"john.doe@example.com","acme_phone":"555-123-4567"}}`

func TestParseSample(t *testing.T) {
	ev, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := Event{
		EventType: ContactCreated, EventID: "evt_12345",
		Timestamp: time.Date(2025, 5, 17, 17, 6, 39, 0, time.FixedZone("", -7*3600)),
		Data:      Contact{ContactID: "1234", FirstName: "John", LastName: "Doe", Email: "john.doe@example.com", Phone: "555-123-4567"},
	}
	if !ev.Timestamp.Equal(want.Timestamp) {
		t.Errorf("timestamp: got %v, want %v", ev.Timestamp, want.Timestamp)
	}
	ev.Timestamp = want.Timestamp
	if ev != want {
		t.Errorf("got %+v, want %+v", ev, want)
	}
}

func TestParseRules(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		wantNotJSON bool
		wantProblem string // a substring of one problem; empty: valid
	}{
		{"updated", `{"event_type":"contact.updated","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, false, ""},
		{"deleted, names absent", `{"event_type":"contact.deleted","event_id":"e","timestamp":"2025-05-17T17:06:39.123+02:00","data":{"contact_id":"1"}}`, false, ""},
		{"unknown extra fields kept", `{"event_type":"contact.created","event_id":"e","timestamp":"2025-05-17T17:06:39Z","source":"x","data":{"contact_id":"1","acme_tags":["a"],"acme_email":null}}`, false, ""},
		{"not JSON", `event_type=contact.created`, true, ""},
		{"truncated JSON", `{"event_type":"contact.created"`, true, ""},
		{"array", `[{"event_type":"contact.created"}]`, true, ""},
		{"string", `"contact.created"`, true, ""},
		{"null", `null`, true, ""},
		{"two objects", `{}{}`, true, ""},
		{"object then garbage", `{} x`, true, ""},
		{"object then space", "{\"event_type\":\"contact.updated\",\"event_id\":\"e\",\"timestamp\":\"2025-05-17T17:06:39Z\",\"data\":{\"contact_id\":\"1\"}} \n", false, ""},
		{"escaped names", `{"event\u005ftype":"contact.updated","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact\u005fid":"1"}}`, false, ""},
		{"escaped surrogate pair", `{"event_type":"contact.updated","event_id":"e\ud83d\ude00","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, false, ""},
		{"contact_id outside data not read", `{"event_type":"contact.updated","event_id":"e","timestamp":"2025-05-17T17:06:39Z","contact_id":"1","data":{"x":{"contact_id":"1"}}}`, false, "data.contact_id is missing"},
		{"null event_id", `{"event_type":"contact.updated","event_id":null,"timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, false, "event_id is empty"},
		{"null data", `{"event_type":"contact.updated","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":null}`, false, "data is not an object"},
		{"object contact_id", `{"event_type":"contact.updated","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":{"a":1},"acme_phone":"1"}}`, false, "data.contact_id is not a string"},
		{"empty body", ``, true, ""},
		{"missing event_type", `{"event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, false, "event_type is missing"},
		{"unknown event_type: well-formed (Known false)", `{"event_type":"contact.merged","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, false, ""},
		{"event_type not a string", `{"event_type":7,"event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, false, "event_type is not a string"},
		{"empty event_id", `{"event_type":"contact.created","event_id":" ","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, false, "event_id is empty"},
		{"missing event_id", `{"event_type":"contact.created","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, false, "event_id is missing"},
		{"bad timestamp", `{"event_type":"contact.created","event_id":"e","timestamp":"17/05/2025","data":{"contact_id":"1"}}`, false, "is not RFC 3339"},
		{"timestamp without zone", `{"event_type":"contact.created","event_id":"e","timestamp":"2025-05-17T17:06:39","data":{"contact_id":"1"}}`, false, "is not RFC 3339"},
		{"missing timestamp", `{"event_type":"contact.created","event_id":"e","data":{"contact_id":"1"}}`, false, "timestamp is missing"},
		{"missing data", `{"event_type":"contact.created","event_id":"e","timestamp":"2025-05-17T17:06:39Z"}`, false, "data is missing"},
		{"data not an object", `{"event_type":"contact.created","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":"1"}`, false, "data is not an object"},
		{"missing contact_id", `{"event_type":"contact.created","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{}}`, false, "data.contact_id is missing"},
		{"numeric contact_id", `{"event_type":"contact.created","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":1234}}`, false, "data.contact_id is not a string"},
		{"numeric email", `{"event_type":"contact.created","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1","acme_email":5}}`, false, "data.acme_email is not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.body))
			if got := errors.Is(err, ErrNotJSONObject); got != tt.wantNotJSON {
				t.Fatalf("got %v, want not-JSON %v", err, tt.wantNotJSON)
			}
			if tt.wantNotJSON {
				return
			}
			var ve *ValidationError
			if tt.wantProblem == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a *ValidationError", err)
			}
			if !strings.Contains(ve.Error(), tt.wantProblem) {
				t.Errorf("got %q, want it to contain %q", ve.Error(), tt.wantProblem)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`{"event_type":7,"timestamp":"now","data":{}}`))
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 4 {
		t.Fatalf("got %v, want 4 problems (type, id, timestamp, contact_id)", err)
	}
}

// Identifiers reach Kafka, logs and the Contacts API as they are: an
// escaped lone surrogate anywhere is refused as not well-formed (it would
// become U+FFFD, and two ids one); ids that are not one URL path segment or
// one header value are refused with a reason.
func TestParseIdentifiers(t *testing.T) {
	body := func(eventID, contactID string) string {
		return `{"event_type":"contact.updated","event_id":"` + eventID + `","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"` + contactID + `","acme_first_name":"Ann"}}`
	}
	for _, b := range []string{
		body(`e`, `sur\ud800`), body(`e`, `sur\udbff`), body(`evt\ud800`, `1`), body(`e`, `\udc00x`),
		body(`e`, `1`)[:len(body(`e`, `1`))-1] + `,"x":"\ud800"}`,
		strings.Replace(body(`e`, `1`), `"Ann"`, `"An\ud800n"`, 1),
		strings.Replace(body(`e`, `1`), `"acme_first_name"`, `"acme\ud800"`, 1),
	} {
		if _, err := Parse([]byte(b)); !errors.Is(err, ErrUnpairedSurrogate) {
			t.Errorf("%s: %v, want ErrUnpairedSurrogate", b, err)
		}
	}
	tests := []struct{ eventID, contactID, problem string }{
		{"e", "a/b", `data.contact_id holds '/'`},
		{"e", `a\\b`, `data.contact_id holds '\\'`},
		{"e", "..", "dot-segment"},
		{"e", ".", "dot-segment"},
		{"e", `a\u0000b`, "data.contact_id holds the control character U+0000"},
		{"e", `a\tb`, "control character U+0009"},
		{"e", "a\u0085b", "control character U+0085"},
		{"e", strings.Repeat("x", 256), "is 256 bytes, more than 255"},
		{`e\r\nX-Injected: 1`, "1", "event_id holds the control character U+000D"},
		{strings.Repeat("e", 256), "1", "event_id is 256 bytes"},
		{"e", "a b", ""},
		{"e", "ünïcödé-✓", ""},
		{"e", "a.b..c", ""},
		{"e/1", "1", ""},
		{"e", strings.Repeat("x", 255), ""},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(body(tt.eventID, tt.contactID)))
		var ve *ValidationError
		switch {
		case tt.problem == "" && err != nil:
			t.Errorf("%q/%q: %v, want valid", tt.eventID, tt.contactID, err)
		case tt.problem != "" && (!errors.As(err, &ve) || !strings.Contains(strings.Join(ve.Problems, "; "), tt.problem)):
			t.Errorf("%q/%q: %v, want a problem with %q", tt.eventID, tt.contactID, err, tt.problem)
		}
	}
}
