// Package testcerts makes a throwaway certificate authority for tests: a server certificate
// for loopback and client certificates whose subject carries a principal and a role.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that lives for one test.
type CA struct {
	t    testing.TB
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertFile is the CA certificate as PEM on disk (for --client-ca or --ca).
	CertFile string
	dir      string
	serial   int64
}

// NewCA makes a CA named name, with its certificate in a temporary folder.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{t: t, cert: cert, key: key, dir: t.TempDir(), serial: 1}
	ca.CertFile = ca.write("ca.pem", "CERTIFICATE", der)
	return ca
}

// Pair is a certificate and its key, in memory and on disk.
type Pair struct {
	TLS               tls.Certificate
	CertFile, KeyFile string
	// SPKI is the base64 sha256 of the public key, as Chromium's
	// --ignore-certificate-errors-spki-list takes it.
	SPKI string
}

// Server issues a certificate for 127.0.0.1 and localhost.
func (ca *CA) Server() Pair {
	return ca.issue(pkix.Name{CommonName: "localhost"}, x509.ExtKeyUsageServerAuth, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
}

// Client issues a client certificate with principal as the subject's CN and role as its OU.
func (ca *CA) Client(principal, role string) Pair {
	return ca.issue(pkix.Name{CommonName: principal, OrganizationalUnit: []string{role}}, x509.ExtKeyUsageClientAuth, nil, nil)
}

func (ca *CA) issue(subject pkix.Name, usage x509.ExtKeyUsage, dns []string, ips []net.IP) Pair {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: dns, IPAddresses: ips}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	spkiDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(spkiDER)
	name := subject.CommonName + "-" + big.NewInt(ca.serial).String()
	p := Pair{CertFile: ca.write(name+".pem", "CERTIFICATE", der), KeyFile: ca.write(name+"-key.pem", "PRIVATE KEY", keyDER),
		SPKI: base64.StdEncoding.EncodeToString(sum[:])}
	p.TLS, err = tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// Pool is a pool holding the CA, to verify what it issued.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

func (ca *CA) write(name, kind string, der []byte) string {
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return path
}
