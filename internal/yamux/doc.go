// Package yamux is Tether's copy of github.com/hashicorp/yamux v0.1.2,
// the multiplexer of its sessions (wire/mux.go): the same wire protocol
// and API, with a receive buffer that holds at most a stream's window, so
// that a stream whose reader stalls costs each process its window and no
// more. README.md in this folder lists every difference from upstream.
// Like upstream, the package is under the Mozilla Public License 2.0
// (LICENSE in this folder).
package yamux
