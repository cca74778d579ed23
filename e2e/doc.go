// Package e2e holds Tether's end-to-end tests: a real hub (embedded NATS,
// TLS, MQTT) with the real device and service SDKs in one process, and the
// real binaries driven as a user would drive them.
package e2e
