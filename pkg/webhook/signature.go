package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of the scheme.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix starts every secret in its configured form.
const secretPrefix = "whsec_"

// Errors of Verify. Each means the request is not authenticated (401); they
// differ so the caller can log and count why, never to tell the sender more.
var (
	ErrMissingHeader      = errors.New("missing webhook header")
	ErrInvalidTimestamp   = errors.New("webhook-timestamp is not Unix seconds")
	ErrTimestampTolerance = errors.New("webhook-timestamp outside tolerance")
	ErrNoValidSignature   = errors.New("no valid signature")
)

// Verifier checks signatures against any of several secrets, so a secret can
// be rotated without a moment when either the old or the new one fails.
type Verifier struct {
	keys      [][]byte
	tolerance time.Duration
	now       func() time.Time
}

// DecodeSecret returns the key bytes of a whsec_<base64> secret. Its errors
// never contain the secret.
func DecodeSecret(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return nil, errors.New("secret does not start with " + secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) == 0 {
		return nil, errors.New("secret is not " + secretPrefix + " followed by standard base64")
	}
	return key, nil
}

// NewVerifier returns a verifier of the given whsec_ secrets that accepts
// timestamps at most tolerance away from now, either way.
func NewVerifier(secrets []string, tolerance time.Duration) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no webhook secrets")
	}
	v := &Verifier{tolerance: tolerance, now: time.Now}
	for i, s := range secrets {
		key, err := DecodeSecret(s)
		if err != nil {
			return nil, fmt.Errorf("webhook secret #%d: %w", i+1, err)
		}
		v.keys = append(v.keys, key)
	}
	return v, nil
}

// Verify authenticates body, the raw request bytes, with the request's
// webhook-* headers. It returns nil when the timestamp is within tolerance
// and at least one v1 signature matches one of the secrets.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	id, ts, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	for _, hv := range [...][2]string{{HeaderID, id}, {HeaderTimestamp, ts}, {HeaderSignature, sigs}} {
		if hv[1] == "" {
			return fmt.Errorf("%w: %s", ErrMissingHeader, hv[0])
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrInvalidTimestamp
	}
	if skew := v.now().Sub(time.Unix(sec, 0)); skew > v.tolerance || skew < -v.tolerance {
		return ErrTimestampTolerance
	}

	macs := make([][]byte, len(v.keys))
	for i, key := range v.keys {
		macs[i] = mac(key, id, ts, body)
	}
	for _, entry := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue // other schemes (v1a: asymmetric) are not ours to check
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		for _, want := range macs {
			if hmac.Equal(got, want) { // constant time
				return nil
			}
		}
	}
	return ErrNoValidSignature
}

// Sign returns the webhook-signature entry ("v1,<base64>") of body with key.
func Sign(key []byte, id string, ts int64, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, strconv.FormatInt(ts, 10), body))
}

func mac(key []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}
