package contacts

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Cause says what an answer that is not a success means, as far as one call
// can tell. Whether it is a fault of the contact or of the whole API (or of
// this service's configuration) is decided by who else it hits: the same
// 401 for one contact among healthy ones is the contact's, for every
// contact it is an incident.
type Cause string

// The causes of a failed call.
const (
	// CauseUnavailable: no answer (refused, reset, timed out) or 5xx, 408,
	// 425 — worth another try.
	CauseUnavailable Cause = "unavailable"
	// CauseRateLimited: 429 — the API asks for fewer calls (Retry-After).
	CauseRateLimited Cause = "rate_limited"
	// CauseCredentials: 401 or 403 — the token is refused.
	CauseCredentials Cause = "credentials_refused"
	// CauseRedirected: a 3xx — the base URL points elsewhere (an HTTP to
	// HTTPS redirect at a load balancer, a moved API). Never followed, never
	// a success: Go's client would turn a PUT into a GET.
	CauseRedirected Cause = "redirected"
	// CauseNotFound: 404 (or 410) to a PUT, or to a DELETE while the API's
	// answers give no evidence the base URL is right: a wrong base URL
	// answers every call so.
	CauseNotFound Cause = "not_found"
	// CauseRejected: another 4xx — the API judged this contact's request
	// (a 422 on its email): the contact's own failure.
	CauseRejected Cause = "rejected"
)

// Causes lists every Cause, for metrics.
var Causes = []Cause{CauseUnavailable, CauseRateLimited, CauseCredentials, CauseRedirected, CauseNotFound, CauseRejected}

// TransientError is a failure worth retrying: the network, a timeout, or
// an answer of 408, 425, 429 or 5xx.
type TransientError struct {
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// Cause is CauseUnavailable or CauseRateLimited.
	Cause Cause
	// RetryAfter is the wait the API asked for, 0 when it asked none.
	RetryAfter time.Duration
	Err        error
}

func (e *TransientError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("transient: contacts api answered %d: %v", e.Status, e.Err)
	}
	return fmt.Sprintf("transient: %v", e.Err)
}

func (e *TransientError) Unwrap() error { return e.Err }

// PermanentError is a failure that retrying the same request cannot fix by
// itself: another 4xx, a 3xx, or a request that cannot be made.
type PermanentError struct {
	Status int
	// Cause is CauseCredentials, CauseRedirected, CauseNotFound or
	// CauseRejected.
	Cause Cause
	// Location is a redirect's Location header.
	Location string
	Err      error
}

func (e *PermanentError) Error() string {
	if e.Location != "" {
		return fmt.Sprintf("permanent: contacts api answered %d, redirecting to %s (not followed)", e.Status, e.Location)
	}
	if e.Status != 0 {
		return fmt.Sprintf("permanent: contacts api answered %d: %v", e.Status, e.Err)
	}
	return fmt.Sprintf("permanent: %v", e.Err)
}

func (e *PermanentError) Unwrap() error { return e.Err }

// ErrGone is returned by Delete when the API answered 404 or 410: the
// contact is not there, which is what a delete wants — unless the base URL
// is wrong, where every call answers 404. The caller decides which (the
// worker: done when other calls show the API healthy).
var ErrGone = errors.New("contacts api: the contact is not there (404 or 410 to a DELETE)")

// IsTransient reports whether err, or an error it wraps, is a TransientError.
func IsTransient(err error) bool {
	var t *TransientError
	return errors.As(err, &t)
}

// RetryAfterOf returns the wait a TransientError asked for, or 0.
func RetryAfterOf(err error) time.Duration {
	var t *TransientError
	if errors.As(err, &t) {
		return t.RetryAfter
	}
	return 0
}

// CauseOf returns err's cause: the TransientError's or PermanentError's,
// CauseNotFound for ErrGone, and "" for nil or any other error.
func CauseOf(err error) Cause {
	var t *TransientError
	var p *PermanentError
	switch {
	case errors.As(err, &t):
		return t.Cause
	case errors.As(err, &p):
		return p.Cause
	case errors.Is(err, ErrGone):
		return CauseNotFound
	default:
		return ""
	}
}

// classify turns an answer that is not a success into a typed error.
func classify(resp *http.Response, body string, now time.Time) error {
	err := errors.New(body)
	if body == "" {
		err = errors.New(http.StatusText(resp.StatusCode))
	}
	switch s := resp.StatusCode; {
	case s == http.StatusTooManyRequests:
		return &TransientError{Status: s, Cause: CauseRateLimited, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now), Err: err}
	case s == http.StatusRequestTimeout, s == http.StatusTooEarly, s >= 500:
		return &TransientError{Status: s, Cause: CauseUnavailable, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now), Err: err}
	case s >= 300 && s < 400:
		return &PermanentError{Status: s, Cause: CauseRedirected, Location: resp.Header.Get("Location"), Err: err}
	case s == http.StatusUnauthorized, s == http.StatusForbidden:
		return &PermanentError{Status: s, Cause: CauseCredentials, Err: err}
	case s == http.StatusNotFound, s == http.StatusGone:
		return &PermanentError{Status: s, Cause: CauseNotFound, Err: err}
	default:
		return &PermanentError{Status: s, Cause: CauseRejected, Err: err}
	}
}

// parseRetryAfter reads delay-seconds or an HTTP date (RFC 9110 §10.2.3);
// anything else is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil && at.After(now) {
		return at.Sub(now)
	}
	return 0
}
