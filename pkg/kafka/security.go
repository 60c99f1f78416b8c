package kafka

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"

	"github.com/acmecrm/integration-service/pkg/config"
)

// secure sets sc's TLS and SASL from c (config.Kafka's security
// settings, validated when loaded). Files are read here, once: a changed
// Secret reaches a running pod at its next restart.
//
// Another SASL mechanism is one more case below: OAUTHBEARER (e.g. AWS MSK
// IAM) would set sc.Net.SASL.Mechanism = sarama.SASLTypeOAuth and a
// sarama.AccessTokenProvider that signs or fetches a token (for MSK IAM,
// aws-msk-iam-sasl-signer-go), with the credentials from the pod's identity.
func secure(sc *sarama.Config, c config.Kafka) error {
	if c.UsesTLS() {
		t, err := tlsConfig(c)
		if err != nil {
			return err
		}
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = t
	}
	if !c.UsesSASL() {
		return nil
	}
	password, err := c.Password()
	if err != nil {
		return fmt.Errorf("KAFKA_SASL_PASSWORD_FILE: %w", err)
	}
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.User = c.SASLUsername
	sc.Net.SASL.Password = password
	switch c.SASLMechanism {
	case sarama.SASLTypePlaintext:
		sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case sarama.SASLTypeSCRAMSHA256:
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.HashGeneratorFcn(sha256.New)} }
	case sarama.SASLTypeSCRAMSHA512:
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.HashGeneratorFcn(sha512.New)} }
	default:
		return fmt.Errorf("KAFKA_SASL_MECHANISM %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASLMechanism)
	}
	return nil
}

// tlsConfig builds the TLS client configuration: the CA file's certificates
// (else the system's), the client certificate for mTLS, TLS 1.2 at least.
func tlsConfig(c config.Kafka) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName, InsecureSkipVerify: c.TLSInsecureSkipVerify} //nolint:gosec // only when asked, and logged
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("KAFKA_TLS_CA_FILE %s holds no PEM certificate", c.TLSCAFile)
		}
		t.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			// The error names the files and what is wrong with them, not their content.
			return nil, fmt.Errorf("KAFKA_TLS_CERT_FILE / KAFKA_TLS_KEY_FILE: %w", errors.Unwrap(err))
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// scramClient is sarama's SCRAMClient on xdg-go/scram (the library
// sarama's own examples use).
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (s *scramClient) Begin(user, password, authzID string) error {
	c, err := s.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	s.conv = c.NewConversation()
	return nil
}

func (s *scramClient) Step(challenge string) (string, error) { return s.conv.Step(challenge) }

func (s *scramClient) Done() bool { return s.conv.Done() }
