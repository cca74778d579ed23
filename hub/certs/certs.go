// Package certs makes and keeps the hub's own TLS material: a CA created
// once (devices come to trust it, so it is never replaced) and a server
// certificate for the hub's host names, reissued for the same key when the
// names change or it nears expiry.
//
// Key files are never overwritten. A data folder with none of the four
// files is initialised; one with only part of a pair, or with a file that
// cannot be read or parsed, is refused with the file's name and how to
// recover, because making new material there would destroy a key that may
// be the only copy, or silently hand clients a CA that does not match the
// certificate they are served.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Certificates made on first start: ECDSA P-256, the cheapest handshake
// (RSA-2048 costs the server more than twice the CPU; docs/benchmarks.md).
const (
	// CAFile is the CA certificate users pass to clients with --ca.
	CAFile      = "ca.pem"
	caKeyFile   = "ca-key.pem"
	certFile    = "server.pem"
	certKeyFile = "server-key.pem"
)

// reissueBefore is how long before its expiry the server certificate is
// renewed at start, so a hub restarted now and then never serves an
// expired one.
const reissueBefore = 30 * 24 * time.Hour

// Ensure returns the hub's TLS certificate from the data folder, creating
// the CA and the server certificate in a folder that has neither, and
// issuing a new server certificate for the existing key whenever the one
// there is about to expire, does not cover names or was not signed by the
// CA. It returns an error naming the file, and never writes, when the
// folder holds part of a pair or a file it cannot use.
func Ensure(dir string, names []string) (tls.Certificate, error) {
	if len(names) == 0 {
		return tls.Certificate{}, errors.New("certs: no host name for the server certificate")
	}
	ca, err := loadPair(dir, CAFile, caKeyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	srv, err := loadPair(dir, certFile, certKeyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if ca == nil {
		if srv != nil {
			return tls.Certificate{}, orphanServer(dir)
		}
		if ca, err = createCA(dir); err != nil {
			return tls.Certificate{}, err
		}
	}
	if !ca.cert.IsCA {
		return tls.Certificate{}, unusable(dir, CAFile, fmt.Errorf("%s is not a CA certificate", filepath.Join(dir, CAFile)))
	}
	if srv != nil && srv.servable(ca.cert, names) {
		return srv.tls(), nil
	}
	var key crypto.Signer
	if srv != nil {
		key = srv.key // kept: a key file is never replaced
	} else {
		ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		if err := writePEMNew(filepath.Join(dir, certKeyFile), "EC PRIVATE KEY", mustMarshalKey(ecKey), 0o600); err != nil {
			return tls.Certificate{}, err
		}
		key = ecKey
	}
	der, err := issueServer(ca, key.Public(), names)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(filepath.Join(dir, certFile), "CERTIFICATE", der, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return (&pair{cert: leaf, key: key}).tls(), nil
}

// pair is a certificate and its key as read from the data folder.
type pair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func (p *pair) tls() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.cert.Raw}, PrivateKey: p.key, Leaf: p.cert}
}

// servable reports whether the server certificate can be served as it is:
// signed by ca, covering every name and not about to expire.
func (p *pair) servable(ca *x509.Certificate, names []string) bool {
	if p.cert.CheckSignatureFrom(ca) != nil || time.Until(p.cert.NotAfter) <= reissueBefore {
		return false
	}
	for _, n := range names {
		if p.cert.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

// loadPair reads the certificate and key files of one pair. It returns nil
// and no error when neither file exists, and an error saying which file
// and what to do when only one does or when either cannot be used.
func loadPair(dir, certName, keyName string) (*pair, error) {
	certPath, keyPath := filepath.Join(dir, certName), filepath.Join(dir, keyName)
	certThere, err := exists(certPath)
	if err != nil {
		return nil, err
	}
	keyThere, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case !certThere && !keyThere:
		return nil, nil
	case !certThere:
		return nil, partial(dir, keyName, certName)
	case !keyThere:
		return nil, partial(dir, certName, keyName)
	}
	cert, err := readCert(certPath)
	if err != nil {
		return nil, unusable(dir, certName, err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, unusable(dir, certName, err)
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, unusable(dir, certName, fmt.Errorf("%s is not the key of %s", keyPath, certPath))
	}
	return &pair{cert: cert, key: key}, nil
}

// exists reports whether path is there, whatever it is: a folder or an
// unreadable file in a key's place is reported when it is read, not taken
// for a free place to write.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("cannot look for %s: %w", path, err)
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, nil
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM key", path)
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s holds a %q block, not a private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: a %T cannot sign", path, key)
	}
	return signer, nil
}

// The errors below say what is wrong and how to recover, in the names of
// the files an operator sees. Starting over is always possible but is
// spelled out as a choice, because a new CA cuts off every client given
// the old ca.pem.

// partial is the error of a pair of which only present is there.
func partial(dir, present, missing string) error {
	msg := fmt.Sprintf("%s is missing but %s is there", filepath.Join(dir, missing), filepath.Join(dir, present))
	switch missing {
	case CAFile:
		return fmt.Errorf("%s; the hub will not make a new CA over that key. Restore %s from a backup, or copy it from a client that was given it with --ca. %s",
			msg, CAFile, startOver(dir))
	case caKeyFile:
		return fmt.Errorf("%s; without the key the hub cannot sign for the CA its clients trust. Restore %s from a backup. %s",
			msg, caKeyFile, startOver(dir))
	}
	return fmt.Errorf("%s; the hub will not make a new %s beside it. Restore %s from a backup, or move %s out of %s and the hub issues a new pair from its CA",
		msg, missing, missing, present, dir)
}

// unusable is the error of a pair whose file the hub cannot use.
func unusable(dir, certName string, err error) error {
	if certName == CAFile {
		return fmt.Errorf("%w; restore %s and %s from a backup. %s", err, CAFile, caKeyFile, startOver(dir))
	}
	return fmt.Errorf("%w; restore %s and %s from a backup, or move both out of %s and the hub issues a new pair from its CA",
		err, certFile, certKeyFile, dir)
}

func orphanServer(dir string) error {
	return fmt.Errorf("%s and %s are missing but %s is there: the CA that signed the certificate this hub served is gone. Restore both from a backup. %s",
		filepath.Join(dir, CAFile), filepath.Join(dir, caKeyFile), filepath.Join(dir, certKeyFile), startOver(dir))
}

func startOver(dir string) string {
	return fmt.Sprintf("To start over with a new CA instead, which every client must then be given, move %s, %s, %s and %s out of %s",
		CAFile, caKeyFile, certFile, certKeyFile, dir)
}

func createCA(dir string) (*pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Tether hub CA", Organization: []string{"Tether hub"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	// The key first: a start cut short between the two leaves a key and no
	// certificate, which the next start refuses with its name, rather than
	// a certificate nobody can sign for.
	if err := writePEMNew(filepath.Join(dir, caKeyFile), "EC PRIVATE KEY", mustMarshalKey(key), 0o600); err != nil {
		return nil, err
	}
	if err := writePEMNew(filepath.Join(dir, CAFile), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return &pair{cert: cert, key: key}, nil
}

// issueServer signs a server certificate for pub and names with ca.
func issueServer(ca *pair, pub crypto.PublicKey, names []string) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"Tether hub"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing the server certificate: %w", err)
	}
	return der, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func mustMarshalKey(k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err) // only for keys of unknown curves, never ours
	}
	return b
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// writePEMNew writes a file that must not exist yet.
func writePEMNew(path, typ string, der []byte, mode os.FileMode) error {
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// WriteFileAtomic writes path through a temporary file so a crash or a full
// disk never leaves a half-written file behind. It replaces path: use it
// for what the hub can make again (a certificate, a copy of a key kept in
// the store), never for the only copy of a key.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return writeTemp(path, data, mode, os.Rename)
}

// writeNew writes path as WriteFileAtomic does but fails, leaving the
// existing file as it is, when path exists: a hard link, unlike a rename,
// does not replace its target, so even a second hub started on the same
// folder at the same moment cannot overwrite a key.
func writeNew(path string, data []byte, mode os.FileMode) error {
	err := writeTemp(path, data, mode, os.Link)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s appeared while the hub was creating it (another tetherd on the same data folder?); it was left as it is", path)
	}
	return err
}

// writeTemp writes data to a synced temporary file beside path, then puts
// it in place with place (rename or link) and syncs the folder, so the
// new name survives a crash too.
func writeTemp(path string, data []byte, mode os.FileMode, place func(oldname, newname string) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := place(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // best effort: some file systems refuse to sync a folder
		d.Close()
	}
	return nil
}
