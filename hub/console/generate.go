package console

// The terminal view's xterm.js comes from npm, pinned by
// vendor-src/package-lock.json: after npm ci in vendor-src, go generate
// copies its built files into assets/vendor, which is committed and
// embedded, so that building the hub needs neither npm nor the network.
//go:generate go run ../../internal/tools/consolevendor -src vendor-src -dst assets/vendor
