package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
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
	macs      []*sync.Pool // per key: *keyedMAC, reused
	tolerance time.Duration
	now       func() time.Time
}

// The scheme's headers in Go's canonical form: http.Header.Get allocates
// to canonicalize any other form.
var (
	canonicalID        = http.CanonicalHeaderKey(HeaderID)
	canonicalTimestamp = http.CanonicalHeaderKey(HeaderTimestamp)
	canonicalSignature = http.CanonicalHeaderKey(HeaderSignature)
)

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
		v.macs = append(v.macs, &sync.Pool{New: func() any { return newKeyedMAC(key) }})
	}
	return v, nil
}

// Verify authenticates body, the raw request bytes, with the request's
// webhook-* headers. It returns nil when the timestamp is within tolerance
// and at least one v1 signature matches one of the secrets.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	id, ts, sigs := h.Get(canonicalID), h.Get(canonicalTimestamp), h.Get(canonicalSignature)
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

	// The expected MACs, one per key, on the stack for the usual few keys.
	var stack [4][sha256.Size]byte
	macs := stack[:0]
	for i := range v.keys {
		macs = append(macs, [sha256.Size]byte{})
		v.sum(i, id, ts, body, macs[i][:0])
	}
	var got [sha256.Size]byte
	for entry := range strings.FieldsSeq(sigs) {
		version, b64, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue // other schemes (v1a: asymmetric) are not ours to check
		}
		// A v1 signature is 32 bytes, 44 characters of base64.
		if base64.StdEncoding.DecodedLen(len(b64)) > len(got)+2 {
			continue
		}
		var dec [sha256.Size + 2]byte
		n, err := base64.StdEncoding.Decode(dec[:], []byte(b64))
		if err != nil || n != len(got) {
			continue
		}
		copy(got[:], dec[:n])
		for i := range macs {
			if hmac.Equal(got[:], macs[i][:]) { // constant time
				return nil
			}
		}
	}
	return ErrNoValidSignature
}

// keyedMAC is an HMAC-SHA256 state of one key and a scratch buffer for the
// signed content's prefix.
type keyedMAC struct {
	h       hash.Hash
	scratch []byte
}

func newKeyedMAC(key []byte) *keyedMAC { return &keyedMAC{h: hmac.New(sha256.New, key)} }

// sum appends to dst the MAC of the signed content, "{id}.{ts}.{body}".
func (m *keyedMAC) sum(id, ts string, body, dst []byte) []byte {
	m.h.Reset()
	m.scratch = append(append(append(append(m.scratch[:0], id...), '.'), ts...), '.')
	m.h.Write(m.scratch)
	m.h.Write(body)
	return m.h.Sum(dst)
}

// sum appends to dst the MAC of the signed content with key i, using a
// pooled keyed state.
func (v *Verifier) sum(i int, id, ts string, body, dst []byte) []byte {
	m := v.macs[i].Get().(*keyedMAC)
	defer v.macs[i].Put(m)
	return m.sum(id, ts, body, dst)
}

// Sign returns the webhook-signature entry ("v1,<base64>") of body with key.
func Sign(key []byte, id string, ts int64, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(newKeyedMAC(key).sum(id, strconv.FormatInt(ts, 10), body, nil))
}
