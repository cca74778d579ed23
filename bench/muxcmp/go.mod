module github.com/tether-io/tether/bench/muxcmp

go 1.26.8

require (
	github.com/hashicorp/yamux v0.1.2 // indirect
	github.com/xtaci/smux v1.5.58 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
