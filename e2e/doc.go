// Package e2e holds Tether's end-to-end tests: a real hub (embedded NATS,
// TLS, MQTT) with the real device and service SDKs in one process, and the
// real binaries driven as a user would drive them.
//
// Each test has a hub, folders and ports of its own, so tests run in
// parallel (t.Parallel), except the few that bound how long something
// takes. Whatever can listen on port 0 does, and says where it listens;
// freePort is left for what must be told its port before it starts.
package e2e
