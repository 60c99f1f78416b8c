// Package standin provides a local stand-in for the Contacts API, for
// `make run` and the tests. It is not the Contacts API: it keeps contacts in
// memory, honours Idempotency-Key, records every call, lets contacts be read
// back, and can be told to fail.
//
//	PUT    /contacts/{id}      store the contact (200)
//	DELETE /contacts/{id}      delete it (204; 404 when absent)
//	GET    /contacts/{id}      read it back (200; 404 when absent)
//	GET    /_standin/calls     every call so far, in order
//	POST   /_standin/failures  {"contact_id":"…","status":503,"count":2,"for":"30s","retry_after":"1","share":0.3,"location":"…"}
//	DELETE /_standin/failures  stop failing
//	POST   /_standin/rate_limit {"per_second":2000,"burst":100}: beyond, 429 with Retry-After: 1 (0: no limit)
//
// It can also take a fixed time per call (SetLatency), and it notices a
// contact's calls overlapping (Overlaps): a worker that applies one
// contact's events one after another never causes one.
package standin

import (
	"encoding/json"
	"hash/fnv"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Call is one request the stand-in answered.
type Call struct {
	Method         string `json:"method"`
	ContactID      string `json:"contact_id"`
	IdempotencyKey string `json:"idempotency_key"`
	Status         int    `json:"status"`
	Replayed       bool   `json:"replayed"` // answered from the idempotency record, nothing changed
	Body           string `json:"body,omitempty"`
	// Traceparent is the call's W3C traceparent header, if it had one.
	Traceparent string    `json:"traceparent,omitempty"`
	At          time.Time `json:"at"`
}

// Failure makes matching calls fail with Status.
type Failure struct {
	// ContactID limits the failure to one contact; empty matches every call.
	ContactID string `json:"contact_id"`
	// Status is answered instead of applying the call.
	Status int `json:"status"`
	// Count is how many calls fail; 0 means until cleared or For ends.
	Count int `json:"count"`
	// For is how long the failure lasts from now, e.g. "30s"; empty: no limit.
	For string `json:"for"`
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string `json:"retry_after"`
	// Share, when set, limits the failure to that share (0 to 1) of the
	// contacts, chosen by a hash of their id: a failing shard of the API.
	Share float64 `json:"share"`
	// Location, when set, is sent as the Location header (with a 3xx).
	Location string `json:"location"`

	until time.Time
}

// InShare reports whether contact is among the share (0 to 1) of contacts
// a Failure with that Share hits.
func InShare(contact string, share float64) bool {
	h := fnv.New32a()
	_, _ = h.Write([]byte(contact))
	return float64(h.Sum32()%10000) < share*10000
}

// Server is the stand-in. Its zero value is not usable; call New.
type Server struct {
	token string

	mu       sync.Mutex
	contacts map[string]json.RawMessage
	keys     map[string]int // idempotency key -> status answered
	calls    []Call
	failures []*Failure
	latency  time.Duration
	limit    *rate.Limiter // nil: no rate limit
	// Calls in progress, per contact and in all, to catch a contact's
	// events applied concurrently (overlaps) and to see the concurrency.
	active        map[string]int
	inProgress    int
	maxConcurrent int
	overlaps      []string
}

// New returns a stand-in that requires token as bearer token (none when empty).
func New(token string) *Server {
	return &Server{token: token, contacts: map[string]json.RawMessage{}, keys: map[string]int{}, active: map[string]int{}}
}

// SetLatency makes every PUT and DELETE take d before it is answered, like
// a real API's work (failures included).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Overlaps returns the contacts that had a call start while another of
// theirs was in progress, once per such call: a worker that keeps each
// contact's events in order never causes one.
func (s *Server) Overlaps() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.overlaps...)
}

// MaxConcurrent returns the most PUT and DELETE calls in progress at once.
func (s *Server) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxConcurrent
}

// SetToken makes the stand-in require token as bearer token from now on
// (an expired or rotated token on the API's side).
func (s *Server) SetToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// SetRateLimit makes the stand-in answer at most perSecond calls a second
// (a token bucket of burst calls, as most APIs limit), and 429 with
// Retry-After: 1 beyond; 0 removes the limit.
func (s *Server) SetRateLimit(perSecond float64, burst int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if perSecond <= 0 {
		s.limit = nil
		return
	}
	s.limit = rate.NewLimiter(rate.Limit(perSecond), max(1, burst))
}

// Fail adds a failure rule; rules are checked in the order added.
func (s *Server) Fail(f Failure) error {
	if f.For != "" {
		d, err := time.ParseDuration(f.For)
		if err != nil {
			return err
		}
		f.until = time.Now().Add(d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, &f)
	return nil
}

// ClearFailures removes every failure rule.
func (s *Server) ClearFailures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = nil
}

// Contact returns the stored contact.
func (s *Server) Contact(id string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contacts[id]
	return c, ok
}

// CallCount returns how many calls were answered so far.
func (s *Server) CallCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// Calls returns every call so far, in the order answered.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_standin/calls" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Calls())
	case r.URL.Path == "/_standin/failures" && r.Method == http.MethodPost:
		var f Failure
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil || f.Status < 100 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want {\"status\": N, ...}"})
			return
		}
		if err := s.Fail(f); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusCreated, f)
	case r.URL.Path == "/_standin/failures" && r.Method == http.MethodDelete:
		s.ClearFailures()
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/_standin/rate_limit" && r.Method == http.MethodPost:
		var l struct {
			PerSecond float64 `json:"per_second"`
			Burst     int     `json:"burst"`
		}
		if err := json.NewDecoder(r.Body).Decode(&l); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want {\"per_second\": N, \"burst\": M}"})
			return
		}
		s.SetRateLimit(l.PerSecond, l.Burst)
		writeJSON(w, http.StatusOK, l)
	case strings.HasPrefix(r.URL.Path, "/contacts/"):
		s.contact(w, r, strings.TrimPrefix(r.URL.Path, "/contacts/"))
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	}
}

func (s *Server) contact(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method == http.MethodGet {
		if c, ok := s.Contact(id); ok {
			writeJSON(w, http.StatusOK, c)
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such contact"})
		return
	}
	s.mu.Lock()
	if s.active[id]++; s.active[id] > 1 {
		s.overlaps = append(s.overlaps, id)
	}
	s.inProgress++
	s.maxConcurrent = max(s.maxConcurrent, s.inProgress)
	latency := s.latency
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.active[id]--; s.active[id] == 0 {
			delete(s.active, id)
		}
		s.inProgress--
		s.mu.Unlock()
	}()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			// The caller hung up (it cancelled the call): like a transactional
			// API, change nothing.
			t.Stop()
			return
		}
	}
	call := Call{Method: r.Method, ContactID: id, IdempotencyKey: r.Header.Get("Idempotency-Key"), Body: string(body),
		Traceparent: r.Header.Get("Traceparent"), At: time.Now()}

	s.mu.Lock()
	defer s.mu.Unlock()
	answer := func(status int, v any) {
		call.Status = status
		s.calls = append(s.calls, call)
		if v == nil {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, v)
	}
	if s.limit != nil && !s.limit.Allow() {
		w.Header().Set("Retry-After", "1")
		answer(http.StatusTooManyRequests, map[string]string{"error": "rate limit"})
		return
	}
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token { // s.mu is held
		answer(http.StatusUnauthorized, map[string]string{"error": "bad or missing bearer token"})
		return
	}
	if f := s.failing(id); f != nil {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		if f.Location != "" {
			w.Header().Set("Location", f.Location)
		}
		answer(f.Status, map[string]string{"error": "failing as told"})
		return
	}
	if status, seen := s.keys[call.IdempotencyKey]; seen && call.IdempotencyKey != "" {
		call.Replayed = true
		answer(status, nil)
		return
	}
	switch r.Method {
	case http.MethodPut:
		if !json.Valid(body) {
			answer(http.StatusBadRequest, map[string]string{"error": "body is not JSON"})
			return
		}
		s.contacts[id] = json.RawMessage(body)
		s.keys[call.IdempotencyKey] = http.StatusOK
		answer(http.StatusOK, json.RawMessage(body))
	case http.MethodDelete:
		status := http.StatusNoContent
		if _, ok := s.contacts[id]; !ok {
			status = http.StatusNotFound
		}
		delete(s.contacts, id)
		s.keys[call.IdempotencyKey] = status
		answer(status, nil)
	default:
		answer(http.StatusMethodNotAllowed, map[string]string{"error": "PUT, DELETE or GET"})
	}
}

// failing returns the first live failure rule matching id, using up one of
// its count. The caller holds mu.
func (s *Server) failing(id string) *Failure {
	now := time.Now()
	for i, f := range s.failures {
		if f.ContactID != "" && f.ContactID != id || f.Share > 0 && !InShare(id, f.Share) {
			continue
		}
		if !f.until.IsZero() && now.After(f.until) {
			continue
		}
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.failures = append(s.failures[:i:i], s.failures[i+1:]...)
			}
		}
		return f
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
