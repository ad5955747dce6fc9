package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns their paths.
func selfSigned(t *testing.T) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "vigil-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certPath, keyPath
}

func TestTLS(t *testing.T) {
	vigild, _ := binaries(t)
	cert, key := selfSigned(t)
	d := startDaemon(t, vigild, "--tls-cert", cert, "--tls-key", key)
	admin := addToken(t, d.dataDir, "admin", "ops")
	if out, errOut, code := cli(t, "--server", d.grpc, "--ca", cert, "--token", admin, "models"); code != 0 || !strings.Contains(out, "fastestdet") {
		t.Fatalf("models over TLS: exit %d, %q %q", code, out, errOut)
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", admin, "--timeout", "3s", "models"); code != 1 {
		t.Errorf("plaintext to a TLS server: exit %d (%s), want 1", code, errOut)
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "--tls", "--token", admin, "--timeout", "3s", "models"); code != 1 || !strings.Contains(errOut, "certificate") {
		t.Errorf("TLS without trusting the certificate: exit %d (%s), want 1 and a certificate error", code, errOut)
	}
}
