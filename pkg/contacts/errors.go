package contacts

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// TransientError is a failure worth retrying: the network, a timeout, or
// an answer of 408, 425, 429 or 5xx.
type TransientError struct {
	// Status is the HTTP status, 0 when no answer came.
	Status int
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

// PermanentError is a failure that retrying cannot fix: any other 4xx, or a
// request that cannot be made.
type PermanentError struct {
	Status int
	Err    error
}

func (e *PermanentError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("permanent: contacts api answered %d: %v", e.Status, e.Err)
	}
	return fmt.Sprintf("permanent: %v", e.Err)
}

func (e *PermanentError) Unwrap() error { return e.Err }

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

// classify turns an answer that is not a success into a typed error.
func classify(resp *http.Response, body string, now time.Time) error {
	err := errors.New(body)
	if body == "" {
		err = errors.New(http.StatusText(resp.StatusCode))
	}
	switch s := resp.StatusCode; {
	case s == http.StatusRequestTimeout, s == http.StatusTooEarly, s == http.StatusTooManyRequests, s >= 500:
		return &TransientError{Status: s, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now), Err: err}
	default:
		return &PermanentError{Status: s, Err: err}
	}
}

// parseRetryAfter reads delay-seconds or an HTTP date; anything else is 0.
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
