package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/gateway"
	"github.com/acmecrm/integration-service/tests/standin"
)

// The secured listeners scripts/kafka.sh serves beside plaintext: SASL_SSL
// (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN) on the port + 2 and SSL with
// required client certificates on the port + 3, from a local CA.

// kafkaHome is where scripts/kafka.sh keeps the CA, the client certificate
// and the SCRAM password.
var kafkaHome = func() string {
	if h := os.Getenv("KAFKA_HOME"); h != "" {
		return h
	}
	return filepath.Join("..", "..", ".cache", "kafka")
}()

// securedAddr is the broker's host with the plaintext port plus offset.
func securedAddr(t testing.TB, offset int) string {
	host, port, err := net.SplitHostPort(strings.Split(brokers, ",")[0])
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return net.JoinHostPort(host, strconv.Itoa(p+offset))
}

func scramPassword(t testing.TB) string {
	b, err := os.ReadFile(filepath.Join(kafkaHome, "scram-password"))
	if err != nil {
		t.Fatalf("the SCRAM password scripts/kafka.sh writes: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// saslEnv connects over SASL_SSL with mechanism, the password from a file
// (as a mounted Secret would give it).
func saslEnv(t testing.TB, mechanism, user, password string) map[string]string {
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"KAFKA_BROKERS": securedAddr(t, 2), "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": mechanism,
		"KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD_FILE": file, "KAFKA_TLS_CA_FILE": filepath.Join(kafkaHome, "tls", "ca.crt"),
	}
}

// mtlsEnv connects over SSL with the client certificate.
func mtlsEnv(t testing.TB) map[string]string {
	tls := filepath.Join(kafkaHome, "tls")
	return map[string]string{
		"KAFKA_BROKERS": securedAddr(t, 3), "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_TLS_CA_FILE": filepath.Join(tls, "ca.crt"),
		"KAFKA_TLS_CERT_FILE": filepath.Join(tls, "client.crt"), "KAFKA_TLS_KEY_FILE": filepath.Join(tls, "client.key"),
	}
}

func launchGateway(t testing.TB, env map[string]string) *binary {
	t.Helper()
	addr := freeAddr(t)
	return launch(t, "webhook-gateway", func(ctx context.Context, args []string, getenv func(string) string, out *syncBuffer) error {
		return gateway.Run(ctx, "test", args, getenv, out, out)
	}, addr, merge(map[string]string{"GATEWAY_LISTEN_ADDR": addr}, env))
}

// The whole path over the secured listeners: the gateway produces over
// SASL_SSL with SCRAM-SHA-512, the worker consumes and dead-letters over
// mTLS, and the replay reads and republishes over SASL_SSL.
func TestSecuredGatewayAndWorkerEndToEnd(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{ContactID: "refused", Status: 422})
	sasl := saslEnv(t, "SCRAM-SHA-512", "acme-integration", scramPassword(t))
	gw := startGateway(t, gatewayEnv(topics, sasl))
	wk := startWorker(t, merge(workerEnv(topics, url, nil), mtlsEnv(t)))
	s := newSender(t, gw)
	for _, c := range []string{"secure-1", "refused"} {
		if r := s.mustSend(event("contact.created", "evt_"+c, c), nil); r.status != 202 {
			t.Fatalf("%s: %d %v", c, r.status, r.body)
		}
	}
	eventually(t, 30*time.Second, "secure-1 applied", func() bool { _, ok := api.Contact("secure-1"); return ok })
	eventually(t, 30*time.Second, "refused dead-lettered", func() bool { return len(readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"])) == 1 })
	for _, b := range []*binary{gw, wk} {
		if !strings.Contains(b.logs.String(), `"security_protocol":"`) {
			t.Errorf("%s does not log its security protocol", b.name)
		}
		if strings.Contains(b.logs.String(), scramPassword(t)) {
			t.Errorf("%s logs the SCRAM password", b.name)
		}
	}
	api.ClearFailures()
	_, sum := runReplay(t, merge(topics, sasl, map[string]string{"WORKER_REPLAY_GROUP_ID": uniqueName(t, "replay")}))
	if sum.Replayed != 1 {
		t.Fatalf("replay over SASL_SSL replayed %d, want 1", sum.Replayed)
	}
	eventually(t, 30*time.Second, "the replayed event applied", func() bool { _, ok := api.Contact("refused"); return ok })
	resp, err := http.Get("http://" + gw.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(body), "gateway_") {
		t.Fatalf("/metrics: %v %.200s", err, body)
	}
	if strings.Contains(string(body), scramPassword(t)) {
		t.Error("/metrics shows the password")
	}
}

// SCRAM-SHA-256 and PLAIN connect too (the gateway reports ready: it
// provisioned the topics and its probe reached the broker).
func TestSecuredMechanisms(t *testing.T) {
	for _, mechanism := range []string{"SCRAM-SHA-256", "PLAIN"} {
		t.Run(mechanism, func(t *testing.T) {
			startGateway(t, gatewayEnv(topicEnv(t), saslEnv(t, mechanism, "acme-integration", scramPassword(t))))
		})
	}
}

// Skipping the certificate check connects without the CA, and says so
// loudly.
func TestSecuredInsecureSkipVerifyIsLogged(t *testing.T) {
	env := saslEnv(t, "SCRAM-SHA-512", "acme-integration", scramPassword(t))
	delete(env, "KAFKA_TLS_CA_FILE")
	env["KAFKA_TLS_INSECURE_SKIP_VERIFY"] = "true"
	gw := startGateway(t, gatewayEnv(topicEnv(t), env))
	if !strings.Contains(gw.logs.String(), "KAFKA_TLS_INSECURE_SKIP_VERIFY is true") {
		t.Error("no warning that the certificates are not checked")
	}
}

// notReady checks that b stays up and not ready for a few probe rounds,
// logging the cause at most once per retry round, never the secret.
func notReady(t *testing.T, b *binary, cause, secret string) {
	t.Helper()
	time.Sleep(6 * time.Second)
	resp, err := http.Get("http://" + b.addr + "/readyz")
	if err != nil {
		t.Fatalf("%s is not up: %v", b.name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d, want 503", resp.StatusCode)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, cause) {
		t.Errorf("the logs do not name the cause %q:\n%s", cause, logs)
	}
	if n := strings.Count(logs, "kafka not reachable yet, retrying"); n < 1 || n > 8 {
		t.Errorf("%d retry lines in 6 s, want a few (backoff up to 5 s), not a flood", n)
	}
	if secret != "" && strings.Contains(logs, secret) {
		t.Error("the logs show the secret")
	}
	select {
	case err := <-b.done:
		b.done <- err
		t.Fatalf("%s exited: %v", b.name, err)
	default:
	}
}

// A wrong password: up, not ready, the cause logged; once the broker has
// the credentials (here: the user is created with that password) the
// gateway connects by itself, without a restart.
func TestSecuredWrongPasswordThenFixed(t *testing.T) {
	user, password := uniqueName(t, "user"), "e2e-password-"+strconv.FormatInt(time.Now().UnixNano(), 36)
	gw := launchGateway(t, gatewayEnv(topicEnv(t), saslEnv(t, "SCRAM-SHA-512", user, password)))
	notReady(t, gw, "SASL", password)
	admin := newAdmin(t)
	salt := make([]byte, 32)
	_, _ = rand.Read(salt)
	if _, err := admin.UpsertUserScramCredentials([]sarama.AlterUserScramCredentialsUpsert{{
		Name: user, Mechanism: sarama.SCRAM_MECHANISM_SHA_512, Iterations: 8192, Salt: salt, Password: []byte(password),
	}}); err != nil {
		t.Fatalf("creating SCRAM user: %v", err)
	}
	waitStatus(t, "http://"+gw.addr+"/readyz", http.StatusOK, 60*time.Second, gw)
}

// A broker certificate signed by a CA not trusted: up, not ready, the
// cause (unknown authority) logged.
func TestSecuredUntrustedCA(t *testing.T) {
	env := saslEnv(t, "SCRAM-SHA-512", "acme-integration", scramPassword(t))
	env["KAFKA_TLS_CA_FILE"] = otherCA(t)
	gw := launchGateway(t, gatewayEnv(topicEnv(t), env))
	notReady(t, gw, "certificate signed by unknown authority", scramPassword(t))
}

// The mTLS listener without a client certificate: up, not ready, the
// refused handshake logged.
func TestSecuredMissingClientCertificate(t *testing.T) {
	env := mtlsEnv(t)
	delete(env, "KAFKA_TLS_CERT_FILE")
	delete(env, "KAFKA_TLS_KEY_FILE")
	gw := launchGateway(t, gatewayEnv(topicEnv(t), env))
	notReady(t, gw, "bad certificate", "")
}

// otherCA writes a self-signed CA certificate that signed nothing the
// broker has.
func otherCA(t testing.TB) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the broker's CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "other-ca.crt")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}
