package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: whatever the headers and body, Verify never panics, and it
// accepts a request only if one of its v1 signatures is the HMAC-SHA256,
// under a configured secret, of the id, the timestamp and the body exactly
// as received.
func FuzzVerify(f *testing.F) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := DecodeSecret(secret)
	now := time.Unix(1_780_000_000, 0)
	body := []byte(`{"event_type":"contact.created","event_id":"evt_1","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`)
	f.Add("msg_1", strconv.FormatInt(now.Unix(), 10), Sign(key, "msg_1", now.Unix(), body), body)
	f.Add("msg_1", strconv.FormatInt(now.Unix(), 10), "v1,AAAA "+Sign(key, "msg_1", now.Unix(), body), body)
	f.Add("msg_1", strconv.FormatInt(now.Unix(), 10), "v2,"+Sign(key, "msg_1", now.Unix(), body)[3:], body)
	f.Add("", "", "", []byte{})
	f.Add("msg_2", "1780000000000", "v1,", []byte("{}"))
	f.Add("a.b", "1780000000", "v1,xyz v1, v1,,,", []byte("\xff\x00"))
	v, err := NewVerifier([]string{secret, "whsec_" + base64.StdEncoding.EncodeToString([]byte("second"))}, 5*time.Minute)
	if err != nil {
		f.Fatal(err)
	}
	v.now = func() time.Time { return now }
	keys := [][]byte{key, []byte("second")}
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		if v.Verify(h, body) != nil {
			return
		}
		// Accepted: the headers as the server would see them must carry
		// a genuine signature of exactly this content.
		id, ts, sig = h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
		genuine := false
		for _, k := range keys {
			m := hmac.New(sha256.New, k)
			m.Write([]byte(id + "." + ts + "."))
			m.Write(body)
			want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
			for _, s := range strings.Fields(sig) {
				if s == want {
					genuine = true
				}
			}
		}
		if !genuine {
			t.Fatalf("accepted id %q ts %q sig %q body %q without a genuine signature", id, ts, sig, bytes.TrimSpace(body))
		}
	})
}
