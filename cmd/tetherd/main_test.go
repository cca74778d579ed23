package main

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/tether-io/tether/hub/node"
)

func TestParseFlagsDefaults(t *testing.T) {
	for _, k := range []string{"TETHER_DATA", "TETHER_LISTEN", "TETHER_HOSTNAME", "TETHER_PUBLIC_URL", "TETHER_MQTT_LISTEN"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	c, err := parseFlags(nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.data != "./tether-data" || c.listen != ":8443" || c.mqttListen != ":8883" || c.publicURL != "https://localhost:8443" {
		t.Fatalf("defaults: %+v", c)
	}
	t.Setenv("TETHER_HOSTNAME", "hub.example, 10.0.0.1")
	c, err = parseFlags([]string{"--listen", "127.0.0.1:443"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.publicURL != "https://hub.example:443" || node.ConnectionStringHost(c.publicURL) != "hub.example" || len(c.hostnames) != 2 {
		t.Fatalf("env and flags: %+v %s", c, node.ConnectionStringHost(c.publicURL))
	}
	// Port 0: the port is the listener's, known once it is up, when the
	// node names the public URL (not https://host:0).
	if c, err = parseFlags([]string{"--listen", "127.0.0.1:0"}, os.Stderr); err != nil || c.publicURL != "" {
		t.Fatalf("--listen 127.0.0.1:0: public URL %q (%v), want it left to the node", c.publicURL, err)
	}
	if node.ConnectionStringHost("https://127.0.0.1:18443") != "127.0.0.1:18443" {
		t.Fatal("the port must stay in HostName when it is not 443")
	}
	if _, err := parseFlags([]string{"--tls-cert", "x"}, os.Stderr); err == nil {
		t.Fatal("--tls-cert without --tls-key accepted")
	}
}

func TestParseFlagsClusterAndNATSTLS(t *testing.T) {
	for _, k := range []string{"TETHER_CLUSTER_NAME", "TETHER_CLUSTER_PEERS", "TETHER_CLUSTER_TLS_CERT", "TETHER_CLUSTER_TLS_KEY", "TETHER_CLUSTER_TLS_CA", "TETHER_NATS", "TETHER_NATS_CA", "TETHER_NATS_CERT", "TETHER_NATS_KEY"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("TETHER_CLUSTER_SECRET", "s")
	cluster := []string{"--cluster-name", "c", "--cluster-listen", "10.0.0.1:6222", "--cluster-peers", "10.0.0.2:6222"}
	all := []string{"--cluster-tls-cert", "n.pem", "--cluster-tls-key", "n-key.pem", "--cluster-tls-ca", "ca.pem"}
	c, err := parseFlags(append(cluster, all...), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.cluster.tlsCert != "n.pem" || c.cluster.tlsKey != "n-key.pem" || c.cluster.tlsCA != "ca.pem" {
		t.Fatalf("route TLS flags: %+v", c.cluster)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(cluster, all[:4]...), "go together"},
		{append(cluster, all[2:]...), "go together"},
		{all, "need --cluster-name"},
	} {
		if _, err := parseFlags(tc.args, os.Stderr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats-ca", "ca.pem"}, "need --nats"},
		{[]string{"--nats", "tls://n:4222", "--nats-cert", "c.pem"}, "go together"},
	} {
		if _, err := parseFlags(tc.args, os.Stderr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
	c, err = parseFlags([]string{"--nats", "tls://n:4222", "--nats-ca", "nats-ca.pem"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clusterOptions(c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "nats-ca.pem") {
		t.Errorf("clusterOptions with a missing NATS CA file: %v", err)
	}

	// The files are read when the node starts: a missing one is a clear
	// error naming it.
	c, err = parseFlags(append(cluster, all...), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clusterOptions(c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "n.pem") {
		t.Errorf("clusterOptions with missing route certificate files: %v", err)
	}
}
