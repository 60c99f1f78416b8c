// Command noop-http is the HTTP ceiling the gateway is measured against in
// `make bench`: a plain net/http server that reads each request's body and
// answers 202 with a JSON body the size of the gateway's, doing nothing else.
// It is not part of the service.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "", "listen address (required: the caller chooses a free port)")
	flag.Parse()
	if *addr == "" {
		fmt.Fprintln(os.Stderr, "noop-http: -addr is required")
		os.Exit(2)
	}
	answer := []byte(`{"status":"accepted","event_id":"evt_noop_0000000000000"}` + "\n")
	srv := &http.Server{
		Addr: *addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write(answer)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "noop-http:", err)
		os.Exit(1)
	}
}
