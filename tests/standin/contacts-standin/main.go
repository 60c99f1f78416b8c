// Command contacts-standin serves the local stand-in for the Contacts API
// (package standin) for `make run`. It is not the Contacts API.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/acmecrm/integration-service/tests/standin"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	token := flag.String("token", "", "bearer token to require (none when empty)")
	latency := flag.Duration("latency", 0, "time each PUT and DELETE takes, like a real API's work")
	var rejects []string
	flag.Func("reject", "CONTACT_ID=STATUS: always answer STATUS for this contact (repeatable)", func(v string) error {
		rejects = append(rejects, v)
		return nil
	})
	flag.Parse()

	s := standin.New(*token)
	s.SetLatency(*latency)
	for _, r := range rejects {
		id, st, ok := strings.Cut(r, "=")
		status, err := strconv.Atoi(st)
		if !ok || err != nil {
			fmt.Fprintf(os.Stderr, "contacts-standin: --reject %q is not CONTACT_ID=STATUS\n", r)
			os.Exit(2)
		}
		_ = s.Fail(standin.Failure{ContactID: id, Status: status})
	}
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(w, r)
		if strings.HasPrefix(r.URL.Path, "/contacts/") && r.Method != http.MethodGet {
			calls := s.Calls()
			c := calls[len(calls)-1]
			fmt.Printf("%s %s %s idempotency-key=%s -> %d%s\n", time.Now().Format("15:04:05.000"), c.Method, r.URL.Path, c.IdempotencyKey, c.Status, map[bool]string{true: " (replayed)"}[c.Replayed])
		}
	})
	fmt.Printf("contacts-standin: local stand-in for the Contacts API on http://%s (not the real API)\n", *addr)
	srv := &http.Server{Addr: *addr, Handler: logged, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "contacts-standin:", err)
		os.Exit(1)
	}
}
