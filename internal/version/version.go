// Package version says which build of Tether is running, so that an
// operator can tell what a hub node, a CLI or a device's agent is without
// guessing from its behaviour. It imports only the standard library: both
// binaries and the device SDK use it, and the agent stays small.
//
// A release sets the version at link time:
//
//	go build -ldflags "-X github.com/tether-io/tether/internal/version.Version=0.3.0
//	  -X github.com/tether-io/tether/internal/version.Commit=abc1234
//	  -X github.com/tether-io/tether/internal/version.Date=2026-12-06T10:00:00Z" ./cmd/...
//
// Whatever is not set so comes from what the Go toolchain recorded in the
// binary (runtime/debug.ReadBuildInfo): the module's version (a tag, or a
// pseudo-version), the commit, its time and whether the tree had changes.
package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Set by -ldflags -X; empty when not.
var (
	// Version is the release, such as 0.3.0.
	Version string
	// Commit is the revision the release was built from.
	Commit string
	// Date is when the release was built, RFC 3339.
	Date string
)

// modulePath is Tether's module: the main module of tetherd and tether,
// a dependency of a program that uses the device or service SDK.
const modulePath = "github.com/tether-io/tether"

// Devel is the version of a build that says none: neither set at link
// time nor recorded by the toolchain (go run, -buildvcs=false).
const Devel = "devel"

// Info is one build's identity.
type Info struct {
	// Version is the release (0.3.0), the module version the toolchain
	// recorded (0.0.0-20261206100000-abc123456789 for a commit past any
	// tag), or Devel. A leading "v" is dropped, so that a release named
	// by its tag and one named at link time read alike.
	Version string
	// Commit is the revision, a full hash cut to 12 digits (as Go's
	// pseudo-versions do), the toolchain's followed by "+dirty" when the
	// tree had uncommitted changes; "" when unknown.
	Commit string
	// Date is the build's time as the release set it, else the commit's
	// (the time reproducible builds stamp); "" when unknown.
	Date string
	// GoVersion is the toolchain that built the binary (go1.26.8).
	GoVersion string
	// Platform is GOOS/GOARCH.
	Platform string
}

// Get is this binary's Info.
func Get() Info { return get() }

var get = sync.OnceValue(func() Info {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(bi, Version, Commit, Date)
})

// fromBuildInfo makes the Info of a binary built with bi (nil when the
// binary has none) and the values set at link time, which win.
func fromBuildInfo(bi *debug.BuildInfo, version, commit, date string) Info {
	in := Info{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if in.Version == "" {
			in.Version = moduleVersion(bi)
		}
		// The revision is the main module's: for a program that only
		// uses Tether's SDK it is that program's, not Tether's.
		if bi.Main.Path == modulePath {
			setting := func(key string) string {
				for _, s := range bi.Settings {
					if s.Key == key {
						return s.Value
					}
				}
				return ""
			}
			if in.Commit == "" {
				if rev := setting("vcs.revision"); rev != "" {
					in.Commit = shortHash(rev)
					if setting("vcs.modified") == "true" {
						in.Commit += "+dirty"
					}
				}
			}
			if in.Date == "" {
				in.Date = setting("vcs.time")
			}
		}
	}
	in.Commit = shortHash(in.Commit)
	if in.Version == "" {
		in.Version = Devel
	}
	if len(in.Version) > 1 && in.Version[0] == 'v' && in.Version[1] >= '0' && in.Version[1] <= '9' {
		in.Version = in.Version[1:]
	}
	return in
}

// shortHash cuts a full commit hash (40 or 64 hex digits, as a release
// script passes git rev-parse HEAD) to 12: the line stays short and the
// hash unambiguous. Anything else is kept as it is.
func shortHash(commit string) string {
	if len(commit) != 40 && len(commit) != 64 {
		return commit
	}
	for _, c := range commit {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return commit
		}
	}
	return commit[:12]
}

// moduleVersion is the version bi records for Tether's module, as the
// main module or as a dependency; "" when it records none ("(devel)").
func moduleVersion(bi *debug.BuildInfo) string {
	m := &bi.Main
	if m.Path != modulePath {
		m = nil
		for _, d := range bi.Deps {
			if d.Path == modulePath {
				m = d
				break
			}
		}
	}
	if m == nil {
		return ""
	}
	if m.Replace != nil {
		m = m.Replace
	}
	if m.Version == "(devel)" {
		return ""
	}
	return m.Version
}

// String is the version with what else is known of the build:
// "0.3.0 (commit abc1234, built 2026-12-06T10:00:00Z, go1.26.8, linux/amd64)".
// What is unknown is left out.
func (in Info) String() string {
	var parts []string
	if in.Commit != "" {
		parts = append(parts, "commit "+in.Commit)
	}
	if in.Date != "" {
		parts = append(parts, "built "+in.Date)
	}
	parts = append(parts, in.GoVersion, in.Platform)
	return in.Version + " (" + strings.Join(parts, ", ") + ")"
}

// Line is what a program prints for its version: its name and String.
func Line(program string) string {
	return program + " " + Get().String()
}
