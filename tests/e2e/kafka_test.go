package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func newClient(t testing.TB, brokerList string) sarama.Client {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_9_0_0
	sc.Consumer.Return.Errors = true
	c, err := sarama.NewClient(strings.Split(brokerList, ","), sc)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll returns every record of topic, partition by partition, from the
// oldest to the high-water mark as of the call: exactly what the topic holds.
func readAll(t testing.TB, brokerList, topic string) []*sarama.ConsumerMessage {
	t.Helper()
	client := newClient(t, brokerList)
	if err := client.RefreshMetadata(topic); err != nil {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	partitions, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []*sarama.ConsumerMessage
	for _, p := range partitions {
		hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		if hwm == oldest {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, oldest)
		if err != nil {
			t.Fatal(err)
		}
		timeout := time.After(30 * time.Second)
		for next := oldest; next < hwm; {
			select {
			case m := <-pc.Messages():
				out = append(out, m)
				next = m.Offset + 1
			case err := <-pc.Errors():
				t.Fatalf("consuming %s/%d: %v", topic, p, err)
			case <-timeout:
				t.Fatalf("consuming %s/%d: stuck at %d of %d", topic, p, next, hwm)
			}
		}
		pc.Close()
	}
	return out
}

func headerMap(m *sarama.ConsumerMessage) map[string]string {
	out := map[string]string{}
	for _, h := range m.Headers {
		out[string(h.Key)] = string(h.Value)
	}
	return out
}

// ownBroker is a second real broker on its own port and data, for tests that
// stop and restart Kafka without disturbing the shared one.
type ownBroker struct {
	port int
	addr string
}

// startOwnBroker starts a broker on a block of four ports free now
// (PLAINTEXT, controller, SASL_SSL, SSL), never fixed ones: the machine is
// shared.
func startOwnBroker(t testing.TB) *ownBroker {
	t.Helper()
	port := freePortBlock(t, 0, 1, 2, 3)
	b := &ownBroker{port: port, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	b.script(t, "reset") // fresh data: no state from an earlier run
	b.script(t, "up")
	t.Cleanup(func() { b.script(t, "reset") })
	return b
}

func (b *ownBroker) script(t testing.TB, verb string) {
	t.Helper()
	cmd := exec.Command("../../scripts/kafka.sh", verb)
	cmd.Env = append(os.Environ(), fmt.Sprintf("KAFKA_PORT=%d", b.port), "KAFKA_HEAP=384m")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kafka.sh %s (port %d): %v\n%s", verb, b.port, err, out)
	}
}

// freePortBlock returns a port p such that p+offset is free on 127.0.0.1 for
// every offset given, chosen at random in 20000-29999 (below the kernel's
// ephemeral range, so that outgoing connections do not take them meanwhile).
func freePortBlock(t testing.TB, offsets ...int) int {
	t.Helper()
	for range 500 {
		p := 20000 + rand.IntN(9900)
		free := true
		for _, o := range offsets {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+o))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return p
		}
	}
	t.Fatal("no free block of ports found in 20000-29999")
	return 0
}
