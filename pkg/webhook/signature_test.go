package webhook

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Secrets as AcmeCRM would configure them; the reference library's README
// uses the first.
const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24="
	secretC = "whsec_dGhpcmQtc2VjcmV0LW5vdC1jb25maWd1cmVk" // never configured below
)

var body = []byte(`{"event_type":"contact.created","event_id":"evt_1","timestamp":"2025-05-17T17:06:39-07:00","data":{"contact_id":"1234"}}`)

var now = time.Unix(1_747_526_799, 0)

// refSign signs with the Standard Webhooks reference library, a signer this
// project did not write.
func refSign(t *testing.T, secret, id string, ts time.Time, payload []byte) string {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(id, ts, payload)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func headers(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, sig)
	return h
}

func TestVerify(t *testing.T) {
	v, err := NewVerifier([]string{secretA, secretB}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v.now = func() time.Time { return now }
	good := refSign(t, secretA, "msg_1", now, body)
	goodB := refSign(t, secretB, "msg_1", now, body)
	wrong := refSign(t, secretC, "msg_1", now, body)

	tests := []struct {
		name    string
		h       http.Header
		body    []byte
		wantErr error
	}{
		{"valid", headers("msg_1", now, good), body, nil},
		{"second rotated secret", headers("msg_1", now, goodB), body, nil},
		{"several signatures, one valid", headers("msg_1", now, wrong+" v1,AAAA "+good), body, nil},
		{"valid among unknown versions", headers("msg_1", now, "v1a,"+strings.TrimPrefix(good, "v1,")+" "+good), body, nil},
		{"timestamp 4m59s old", headers("msg_1", now.Add(-299*time.Second), refSign(t, secretA, "msg_1", now.Add(-299*time.Second), body)), body, nil},
		{"wrong secret", headers("msg_1", now, wrong), body, ErrNoValidSignature},
		{"tampered body", headers("msg_1", now, good), []byte(strings.Replace(string(body), "1234", "1235", 1)), ErrNoValidSignature},
		{"re-serialised body", headers("msg_1", now, good), []byte(strings.ReplaceAll(string(body), ",", ", ")), ErrNoValidSignature},
		{"other webhook-id", headers("msg_2", now, good), body, ErrNoValidSignature},
		{"bad base64", headers("msg_1", now, "v1,!!!not-base64!!!"), body, ErrNoValidSignature},
		{"unknown version only", headers("msg_1", now, "v2,"+strings.TrimPrefix(good, "v1,")), body, ErrNoValidSignature},
		{"no comma", headers("msg_1", now, strings.TrimPrefix(good, "v1,")), body, ErrNoValidSignature},
		{"missing webhook-id", headers("", now, good), body, ErrMissingHeader},
		{"missing webhook-signature", headers("msg_1", now, ""), body, ErrMissingHeader},
		{"missing webhook-timestamp", func() http.Header { h := headers("msg_1", now, good); h.Del(HeaderTimestamp); return h }(), body, ErrMissingHeader},
		{"timestamp too old", headers("msg_1", now.Add(-301*time.Second), refSign(t, secretA, "msg_1", now.Add(-301*time.Second), body)), body, ErrTimestampTolerance},
		{"timestamp too far in the future", headers("msg_1", now.Add(301*time.Second), refSign(t, secretA, "msg_1", now.Add(301*time.Second), body)), body, ErrTimestampTolerance},
		{"non-numeric timestamp", func() http.Header {
			h := headers("msg_1", now, good)
			h.Set(HeaderTimestamp, "2025-05-17T17:06:39Z")
			return h
		}(), body, ErrInvalidTimestamp},
		{"timestamp in milliseconds", func() http.Header {
			h := headers("msg_1", now, good)
			h.Set(HeaderTimestamp, strconv.FormatInt(now.UnixMilli(), 10))
			return h
		}(), body, ErrTimestampTolerance},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(tt.h, tt.body)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// What our Sign produces, the reference library accepts, byte for byte.
func TestSignInteroperatesWithReferenceLibrary(t *testing.T) {
	key, err := DecodeSecret(secretA)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now()
	ours := Sign(key, "msg_x", ts.Unix(), body)
	if ref := refSign(t, secretA, "msg_x", time.Unix(ts.Unix(), 0), body); ours != ref {
		t.Errorf("got %s, want the reference library's %s", ours, ref)
	}
	wh, _ := standardwebhooks.NewWebhook(secretA)
	if err := wh.Verify(body, headers("msg_x", ts, ours)); err != nil {
		t.Errorf("reference library rejects our signature: %v", err)
	}
}

func TestNewVerifierRejectsBadSecrets(t *testing.T) {
	for _, s := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_***"} {
		_, err := NewVerifier([]string{s}, time.Minute)
		if err == nil {
			t.Errorf("secret %q: got no error", s)
			continue
		}
		if s != "" && strings.Contains(err.Error(), strings.TrimPrefix(s, "whsec_")) && len(s) > 10 {
			t.Errorf("error %q reveals the secret", err)
		}
	}
	if _, err := NewVerifier(nil, time.Minute); err == nil {
		t.Error("no secrets: got no error")
	}
}

func TestDecodeSecret(t *testing.T) {
	key, err := DecodeSecret("whsec_" + base64.StdEncoding.EncodeToString([]byte("k3y")))
	if err != nil || string(key) != "k3y" {
		t.Errorf("got %q, %v; want k3y, nil", key, err)
	}
}

// More secrets than the verifier keeps its MACs on the stack for, each one
// verified (concurrently, through the pooled MAC states), and never a
// signature of a secret not configured.
func TestVerifyManySecretsConcurrently(t *testing.T) {
	var secrets []string
	for i := range 6 {
		secrets = append(secrets, "whsec_"+base64.StdEncoding.EncodeToString([]byte("rotation-secret-number-"+strconv.Itoa(i))))
	}
	v, err := NewVerifier(secrets, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v.now = func() time.Time { return now }
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i, s := range secrets {
				if err := v.Verify(headers("msg_1", now, refSign(t, s, "msg_1", now, body)), body); err != nil {
					t.Errorf("secret #%d: %v", i+1, err)
				}
				if err := v.Verify(headers("msg_1", now, refSign(t, secretC, "msg_1", now, body)), body); !errors.Is(err, ErrNoValidSignature) {
					t.Errorf("unconfigured secret: got %v", err)
				}
			}
		})
	}
	wg.Wait()
}
