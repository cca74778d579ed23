package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// policyService is a service client of h with a policy's key.
func policyService(t *testing.T, h *testHub, name, key string) *service.Client {
	t.Helper()
	cs := sas.ConnectionString{HostName: h.Addr, SharedAccessKeyName: name, SharedAccessKey: key}
	c, err := service.New(cs.String(), svcOptions(service.Options{TLSConfig: h.TLS}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startTwoHubs runs two hub nodes on one NATS, as a cluster: one data
// folder, so one CA and one certificate for both.
func startTwoHubs(t *testing.T) (a, b *testHub) {
	t.Helper()
	natsURL := startNATS(t)
	a = startHub(t, hubOptions{nats: natsURL})
	b = startHub(t, hubOptions{nats: natsURL, dir: a.Dir})
	return a, b
}

// policyDevice connects to h as device id with a token signed by a key of
// policy (the SDKs sign only with a device's own key), without
// reconnecting. The client reports whether it is connected.
func policyDevice(t *testing.T, h *testHub, id, policy, key string) mqtt.Client {
	t.Helper()
	tok, err := sas.New(h.Addr+"/devices/"+id, key, policy, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	opts := mqtt.NewClientOptions().AddBroker("tls://" + h.MQTTAddr).SetClientID(id).
		SetUsername(h.Addr + "/" + id + "/?api-version=2020-09-30").SetPassword(tok).
		SetTLSConfig(h.TLS).SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	if ct := c.Connect(); !ct.WaitTimeout(10*time.Second) || ct.Error() != nil {
		t.Fatalf("%s connecting with a key of %s: %v", id, policy, ct.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestPoliciesAPI lists, reads, adds, rotates and removes shared access
// policies through the service SDK and the REST routes, and shows that
// each policy gets the rights it holds and no more.
func TestPoliciesAPI(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	ctx := t.Context()
	owner := h.service(t)
	devStr := h.addDevice(t, "dev1")
	dc := h.connectDevice(t, devStr, device.WebSocket)
	serveEcho(t, dc)

	list, err := owner.ListPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.AccessPolicy{
		{KeyName: "iothubowner", Rights: "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect"},
		{KeyName: "registryRead", Rights: "RegistryRead"},
		{KeyName: "registryReadWrite", Rights: "RegistryRead, RegistryWrite"},
		{KeyName: "service", Rights: "ServiceConnect"},
	}
	if !slices.Equal(list, want) {
		t.Fatalf("policies %+v,\nwant %+v (names and rights, no keys)", list, want)
	}
	// The listing's JSON holds no key at all; listkeys does.
	raw := func(method, path string, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, "https://"+h.Addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", h.ownerToken(t, time.Hour))
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := raw("GET", "/policies", ""); code != 200 || strings.Contains(body, "Key\"") || !strings.Contains(body, `"value":[`) {
		t.Errorf("GET /policies: %d %s", code, body)
	}
	if code, body := raw("GET", "/policies/service", ""); code != 200 || body != `{"keyName":"service","rights":"ServiceConnect"}` {
		t.Errorf("GET /policies/service: %d %s", code, body)
	}
	var keys wire.AccessPolicyList
	if code, body := raw("POST", "/policies/listkeys", ""); code != 200 || json.Unmarshal([]byte(body), &keys) != nil || len(keys.Value) != 4 || keys.Value[3].PrimaryKey == "" {
		t.Errorf("POST /policies/listkeys: %d %s", code, body)
	}

	// service: ServiceConnect only.
	svcPolicy, err := owner.GetPolicy(ctx, "service")
	if err != nil || svcPolicy.PrimaryKey == "" || svcPolicy.SecondaryKey == "" || svcPolicy.Rights != "ServiceConnect" {
		t.Fatalf("GetPolicy(service) = %+v, %v", svcPolicy, err)
	}
	cs, err := sas.ParseConnectionString(owner.PolicyConnectionString(svcPolicy, false))
	if err != nil || cs.SharedAccessKeyName != "service" || cs.SharedAccessKey != svcPolicy.PrimaryKey || cs.HostName != h.Addr {
		t.Fatalf("service connection string %+v, %v", cs, err)
	}
	svc := policyService(t, h, "service", svcPolicy.SecondaryKey)
	conn, err := svc.OpenStream(ctx, "dev1", "echo")
	if err != nil {
		t.Fatalf("the service policy opening a stream: %v", err)
	}
	echoOnce(t, conn, "service")
	conn.Close()
	if _, err := svc.ListDevices(ctx); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("the service policy listing devices: %v, want unauthorized", err)
	}
	if _, err := svc.ListPolicies(ctx); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("the service policy listing policies: %v, want unauthorized", err)
	}

	// A policy of chosen rights: RegistryRead only.
	reader, err := owner.CreatePolicy(ctx, "reader", "registryread")
	if err != nil || reader.Rights != "RegistryRead" || reader.PrimaryKey == "" {
		t.Fatalf("CreatePolicy(reader) = %+v, %v", reader, err)
	}
	if _, err := owner.CreatePolicy(ctx, "reader", "ServiceConnect"); !errors.Is(err, service.ErrPolicyExists) {
		t.Errorf("adding reader twice: %v, want ErrPolicyExists", err)
	}
	ro := policyService(t, h, "reader", reader.PrimaryKey)
	if ds, err := ro.ListDevices(ctx); err != nil || len(ds) != 1 {
		t.Errorf("reader listing devices: %v, %v", ds, err)
	}
	if _, err := ro.OpenStream(ctx, "dev1", "echo"); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("reader opening a stream: %v, want unauthorized", err)
	}
	if _, err := ro.CreateDevice(ctx, "dev2"); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("reader adding a device: %v, want unauthorized", err)
	}
	if _, err := ro.GetDevice(ctx, "dev2"); !errors.Is(err, service.ErrDeviceNotFound) {
		t.Errorf("reader's refused device exists: %v", err)
	}
	// Managing policies takes every right.
	rw, _ := owner.GetPolicy(ctx, "registryReadWrite")
	if _, err := policyService(t, h, "registryReadWrite", rw.PrimaryKey).CreatePolicy(ctx, "mine", "RegistryRead"); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("registryReadWrite adding a policy: %v, want unauthorized", err)
	}

	// Rotating a key: the old one fails at once, the other key and the
	// new one work.
	rotated, err := owner.RotatePolicyKey(ctx, "reader", false)
	if err != nil || rotated.PrimaryKey == reader.PrimaryKey || rotated.SecondaryKey != reader.SecondaryKey {
		t.Fatalf("RotatePolicyKey(reader) = %+v, %v", rotated, err)
	}
	if _, err := ro.ListDevices(ctx); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("the rotated key still works: %v", err)
	}
	for _, key := range []string{rotated.PrimaryKey, rotated.SecondaryKey} {
		if _, err := policyService(t, h, "reader", key).ListDevices(ctx); err != nil {
			t.Errorf("a current key of reader: %v", err)
		}
	}
	if again, err := owner.RotatePolicyKey(ctx, "reader", true); err != nil || again.SecondaryKey == reader.SecondaryKey || again.PrimaryKey != rotated.PrimaryKey {
		t.Errorf("rotating the secondary: %+v, %v", again, err)
	}

	// Removing it: its keys fail, and it is gone.
	if err := owner.DeletePolicy(ctx, "reader"); err != nil {
		t.Fatal(err)
	}
	if _, err := policyService(t, h, "reader", rotated.PrimaryKey).ListDevices(ctx); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("a removed policy's key: %v", err)
	}
	if _, err := owner.GetPolicy(ctx, "reader"); !errors.Is(err, service.ErrPolicyNotFound) {
		t.Errorf("GetPolicy after removal: %v", err)
	}
	if err := owner.DeletePolicy(ctx, "reader"); !errors.Is(err, service.ErrPolicyNotFound) {
		t.Errorf("removing it again: %v", err)
	}

	// Refused, with the reason: the owner policy's removal or a right
	// taken from it, unknown rights, malformed names.
	var ae *service.APIError
	if err := owner.DeletePolicy(ctx, "iothubowner"); !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.Message, "owner policy") {
		t.Errorf("removing iothubowner: %v", err)
	}
	if code, body := raw("PUT", "/policies/iothubowner", `{"rights": "ServiceConnect"}`); code != 400 || !strings.Contains(body, "keeps every right") {
		t.Errorf("stripping iothubowner: %d %s", code, body)
	}
	if _, err := owner.CreatePolicy(ctx, "odd", "Admin"); !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.Message, `unknown right "Admin"`) {
		t.Errorf("an unknown right: %v", err)
	}
	if _, err := owner.CreatePolicy(ctx, "a;b", "ServiceConnect"); !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.Message, "policy name") {
		t.Errorf("a malformed name: %v", err)
	}
	if code, body := raw("POST", "/policies/service/renewkey?key=both", ""); code != 400 || !strings.Contains(body, "key=primary or key=secondary") {
		t.Errorf("renewkey of neither key: %d %s", code, body)
	}
	if list, _ := owner.ListPolicies(ctx); !slices.Equal(list, want) {
		t.Errorf("after the refusals: %+v", list)
	}
	// The owner still works, as it must: it was never lost.
	if _, err := owner.ListDevices(ctx); err != nil {
		t.Errorf("the owner after all: %v", err)
	}
}

// TestPolicyKeyRotationEndsWhatItOpened: on a hub of two nodes, rotating a
// policy's primary key through one node fails its tokens at once and ends
// the streams it opened, homed on either node, and the device session a
// device opened with it (DeviceConnect); the streams and the session
// opened with its secondary key go on.
func TestPolicyKeyRotationEndsWhatItOpened(t *testing.T) {
	t.Parallel()
	a, b := startTwoHubs(t)
	ctx := t.Context()
	owner := a.service(t)
	p, err := owner.CreatePolicy(ctx, "ops", "ServiceConnect", "DeviceConnect")
	if err != nil {
		t.Fatal(err)
	}
	dc := b.connectDevice(t, a.addDevice(t, "dev1"), device.TLS)
	serveEcho(t, dc)
	// dev2 and dev3 connect with tokens of the policy's keys, not their
	// own, as Azure's DeviceConnect allows.
	a.addDevice(t, "dev2")
	a.addDevice(t, "dev3")
	onPrimary := policyDevice(t, b, "dev2", "ops", p.PrimaryKey)
	onSecondary := policyDevice(t, b, "dev3", "ops", p.SecondaryKey)

	// Streams on the primary key homed on each node, one on the secondary.
	open := func(svc *service.Client, what string) net.Conn {
		t.Helper()
		conn, err := svc.OpenStream(ctx, "dev1", "echo")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Cleanup(func() { conn.Close() })
		echoOnce(t, conn, what)
		return conn
	}
	primaryA, primaryB := policyService(t, a, "ops", p.PrimaryKey), policyService(t, b, "ops", p.PrimaryKey)
	connA := open(primaryA, "primary key, through the node that rotates")
	connB := open(primaryB, "primary key, through the other node")
	connS := open(policyService(t, b, "ops", p.SecondaryKey), "secondary key")

	rotated, err := owner.RotatePolicyKey(ctx, "ops", false)
	if err != nil {
		t.Fatal(err)
	}
	// At once, on both nodes: no cache to expire.
	if _, err := primaryB.OpenStream(ctx, "dev1", "echo"); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("a stream on the old key through the other node: %v, want unauthorized", err)
	}
	if _, err := primaryA.StreamingEndpoints(ctx); !errors.Is(err, service.ErrUnauthorized) {
		t.Errorf("a call on the old key: %v, want unauthorized", err)
	}
	closedWithin(t, connA, 5*time.Second, "a stream on the old key homed on the node that rotated")
	closedWithin(t, connB, 5*time.Second, "a stream on the old key homed on the other node")
	eventually(t, 5*time.Second, "the device session on the old key to end", func() bool { return !onPrimary.IsConnectionOpen() })
	// Ended in the same pass as the session on the old key: had it been
	// ended too, it would be by now.
	if !onSecondary.IsConnectionOpen() {
		t.Error("the device session on the secondary key was ended too")
	}
	echoOnce(t, connS, "the secondary key's stream goes on")
	conn, err := policyService(t, b, "ops", rotated.PrimaryKey).OpenStream(ctx, "dev1", "echo")
	if err != nil {
		t.Fatalf("a stream on the new key: %v", err)
	}
	echoOnce(t, conn, "new key")
	conn.Close()

	// Removing the policy ends the rest of what it opened.
	if err := owner.DeletePolicy(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, connS, 5*time.Second, "a stream of a removed policy")
	eventually(t, 5*time.Second, "the device session of a removed policy to end", func() bool { return !onSecondary.IsConnectionOpen() })
	if !dc.Connected() {
		t.Error("a device on its own key was disconnected by a policy's change")
	}
}

// TestDeviceRotateKeyEndsOldKeySessions: rotating a device's primary key
// through one node disconnects, on the other node, its session on that key
// within seconds and keeps it out, while a session on the secondary key
// (its module's) stays, until the secondary key is rotated in turn.
func TestDeviceRotateKeyEndsOldKeySessions(t *testing.T) {
	t.Parallel()
	a, b := startTwoHubs(t)
	ctx := t.Context()
	owner := a.service(t)
	d, err := owner.CreateDevice(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	onPrimary := b.connectDevice(t, owner.DeviceConnectionString(d), device.TLS)
	serveEcho(t, onPrimary)
	onSecondary := b.connectDevice(t, sas.ConnectionString{HostName: a.Addr, DeviceID: "dev1", ModuleID: "m1",
		SharedAccessKey: d.Authentication.SymmetricKey.SecondaryKey}.String(), device.TLS)
	streamWorks(t, a, "dev1", "before the rotation")

	if _, err := owner.RotateKey(ctx, "dev1", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the session on the old primary key to end", func() bool { return !onPrimary.Connected() })
	// Both sessions were looked at in one pass.
	if !onSecondary.Connected() {
		t.Fatal("the session on the secondary key was ended by the primary's rotation")
	}
	// The old key stays out: the agent retries, and is refused.
	if _, err := owner.OpenStream(ctx, "dev1", "echo"); !errors.Is(err, service.ErrDeviceOffline) {
		t.Errorf("a stream to the device on its old key: %v, want offline", err)
	}

	if _, err := owner.RotateKey(ctx, "dev1", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the session on the old secondary key to end", func() bool { return !onSecondary.Connected() })
}
