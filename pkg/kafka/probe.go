package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/config"
)

// errNotChecked is the probe's state before its first check.
var errNotChecked = errors.New("kafka not checked yet")

// Probe tells whether the brokers answer, checked in the background so that
// /readyz never blocks on Kafka. It uses its own client, configured to fail
// fast, so a dead broker is noticed within one timeout rather than after the
// producer's retries.
type Probe struct {
	brokers []string
	sc      *sarama.Config
	topics  []string
	timeout time.Duration

	mu  sync.Mutex
	err error
}

// NewProbe returns a probe of the configured brokers that asks for the
// metadata of both topics; it reports ErrNotChecked until Run starts.
func NewProbe(c config.Kafka, base *sarama.Config) *Probe {
	brokers, topics, timeout := c.Brokers, []string{c.Topic, c.DLQTopic}, c.DialTimeout
	sc := *base // shallow copy: only scalar fields change below
	sc.Metadata.Retry.Max = 0
	sc.Metadata.RefreshFrequency = 0
	sc.Net.DialTimeout = timeout
	sc.Net.ReadTimeout = timeout
	sc.Net.WriteTimeout = timeout
	return &Probe{brokers: brokers, sc: &sc, topics: topics, timeout: timeout, err: errNotChecked}
}

// Ready returns nil when the last check reached the brokers, else why not.
func (p *Probe) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Run checks every interval until ctx ends.
func (p *Probe) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.set(p.check())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Probe) set(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

// check connects afresh each time: a cached connection to a broker that has
// since died can look healthy until a request times out.
func (p *Probe) check() error {
	done := make(chan error, 1)
	go func() {
		c, err := sarama.NewClient(p.brokers, p.sc)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		if err := c.RefreshMetadata(p.topics...); err != nil {
			done <- err
			return
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("kafka unreachable: %w", err)
		}
		return nil
	case <-time.After(2 * p.timeout):
		return fmt.Errorf("kafka unreachable: no answer within %v", 2*p.timeout)
	}
}
