// Command produce-rate is a reference point of `make bench`: it sends the
// gateway's record (the same topic, key, value and headers, built by the
// same code) at a fixed rate for a while, with the gateway's producer
// configuration (acks=all, idempotent), and reports its own CPU time per
// acknowledged record. It is the Kafka side of a webhook without the HTTP
// side, so the gateway's CPU per webhook can be split into the two.
//
//	-mode bare:   one goroutine feeds sarama's AsyncProducer, one drains
//	              its successes: sarama alone.
//	-mode waiting: -senders goroutines each hand a record to kafka.Producer
//	              and wait for its acknowledgement, as the gateway's
//	              requests do.
//
// The Kafka settings are read like the gateway's (KAFKA_* variables). It is
// not part of the service.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
)

func main() {
	mode := flag.String("mode", "waiting", "bare (sarama's AsyncProducer alone) or waiting (kafka.Producer, senders waiting for their acks)")
	rate := flag.Int("rate", 10000, "records per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	senders := flag.Int("senders", 64, "waiting: goroutines sending at once")
	bodyFile := flag.String("body", "", "the record's value (an AcmeCRM event); required")
	linger := flag.Duration("linger", -1, "sarama's Producer.Flush.Frequency (default: the gateway's)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "produce-rate:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*mode, *rate, *duration, *senders, *bodyFile, *linger); err != nil {
		fmt.Fprintln(os.Stderr, "produce-rate:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(mode string, rate int, duration time.Duration, senders int, bodyFile string, linger time.Duration) error {
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		return err
	}
	ev, err := acmecrm.Parse(body)
	if err != nil {
		return err
	}
	getenv := func(k string) string {
		if k == "GATEWAY_WEBHOOK_SECRETS" && os.Getenv(k) == "" {
			return "whsec_cHJvZHVjZS1yYXRl" // required by the loader, unused here
		}
		return os.Getenv(k)
	}
	cfg, err := config.LoadGateway(nil, getenv, io.Discard)
	if err != nil {
		return err
	}
	sc, err := kafka.NewProducerConfig(cfg.Kafka)
	if err != nil {
		return err
	}
	if linger >= 0 {
		sc.Producer.Flush.Frequency = linger
	}
	client, err := kafka.Start(context.Background(), cfg.Kafka, sc, zerolog.Nop())
	if err != nil {
		return err
	}
	defer client.Close()
	ap, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		return err
	}
	newMsg := func() *sarama.ProducerMessage {
		return record.NewEventMessage(cfg.Kafka.Topic, ev, body, "msg_rate", time.Now())
	}

	// Tokens at the rate, released every millisecond.
	tokens := make(chan struct{}, rate)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		start, sent := time.Now(), 0
		for {
			select {
			case <-stop:
				close(tokens)
				return
			case now := <-t.C:
				due := int(now.Sub(start).Seconds() * float64(rate))
				for ; sent < due; sent++ {
					select {
					case tokens <- struct{}{}:
					default: // the senders fell behind: the rate is not met
					}
				}
			}
		}
	}()
	var acked, failed atomic.Int64
	cpu0, t0 := cpuTime(), time.Now()
	time.AfterFunc(duration, func() { close(stop) })

	switch mode {
	case "bare":
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range ap.Successes() {
				acked.Add(1)
			}
		}()
		go func() {
			for e := range ap.Errors() {
				failed.Add(1)
				fmt.Fprintln(os.Stderr, "produce-rate:", e.Err)
			}
		}()
		for range tokens {
			ap.Input() <- newMsg()
		}
		ap.AsyncClose()
		<-done
	case "waiting":
		p := kafka.NewProducer(ap)
		var wg sync.WaitGroup
		for range senders {
			wg.Go(func() {
				for range tokens {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					if err := p.Enqueue(ctx, newMsg()); err != nil {
						failed.Add(1)
					} else {
						acked.Add(1)
					}
					cancel()
				}
			})
		}
		wg.Wait()
		p.Close()
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	cpu, elapsed := cpuTime()-cpu0, time.Since(t0)
	n := acked.Load()
	if n == 0 || failed.Load() > 0 {
		return fmt.Errorf("%d records acknowledged, %d failed", n, failed.Load())
	}
	fmt.Printf("mode=%s rate=%d acked=%d failed=%d seconds=%.2f records/s=%.0f cpu_us_per_record=%.2f\n",
		mode, rate, n, failed.Load(), elapsed.Seconds(), float64(n)/elapsed.Seconds(), float64(cpu.Microseconds())/float64(n))
	return nil
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
