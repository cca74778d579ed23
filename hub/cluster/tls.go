package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
)

// RouteTLS loads a node's route certificate and key and the CA that signs
// every node's, for Options.ClusterTLS. The certificate serves both ends
// of a route, so it needs both the serverAuth and clientAuth extended key
// usages (or none), and a name or IP address the other nodes dial it by
// (their --cluster-peers entry for it).
func RouteTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: route certificate: %w", err)
	}
	if eku := cert.Leaf.ExtKeyUsage; len(eku) > 0 && !slices.Contains(eku, x509.ExtKeyUsageAny) &&
		!(slices.Contains(eku, x509.ExtKeyUsageServerAuth) && slices.Contains(eku, x509.ExtKeyUsageClientAuth)) {
		return nil, fmt.Errorf("cluster: route certificate %s: its extended key usage must allow both serverAuth and clientAuth: each node is server and client of a route", certFile)
	}
	pool, err := loadPool(caFile, "route CA")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// ClientTLS is the TLS of a connection to an external NATS, for
// Options.NATSTLS: caFile (may be empty: the system roots) verifies the
// servers, and certFile and keyFile (both or neither) are the client
// certificate for servers that ask for one.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile, "NATS CA")
		if err != nil {
			return nil, err
		}
		conf.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("cluster: a NATS client certificate needs both its certificate and its key")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: NATS client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// loadPool reads the PEM certificates of file, what names it in errors.
func loadPool(file, what string) (*x509.CertPool, error) {
	pemText, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemText) {
		return nil, fmt.Errorf("cluster: %s %s: no PEM certificate in it", what, file)
	}
	return pool, nil
}
