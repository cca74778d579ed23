package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	vcs := []debug.BuildSetting{
		{Key: "-buildmode", Value: "exe"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "abc123456789def0abc123456789def0abc12345"},
		{Key: "vcs.time", Value: "2026-12-01T09:00:00Z"},
		{Key: "vcs.modified", Value: "false"},
	}
	dirty := append(vcs[:len(vcs)-1:len(vcs)-1], debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	main := func(version string, settings []debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: modulePath, Version: version}, Settings: settings}
	}
	for _, tc := range []struct {
		name                  string
		bi                    *debug.BuildInfo
		version, commit, date string // set at link time
		want                  string
	}{
		{"release", main("(devel)", vcs), "0.3.0", "abc1234", "2026-12-06T10:00:00Z",
			"0.3.0 (commit abc1234, built 2026-12-06T10:00:00Z, go1.26.8, " + platform + ")"},
		{"release named by its tag", main("(devel)", nil), "v0.3.0", "", "",
			"0.3.0 (go1.26.8, " + platform + ")"},
		{"release of scripts/version.sh", main("(devel)", nil), "v0.3.0-4-gabc1234", "abc123456789def0abc123456789def0abc12345", "2026-12-06T10:00:00Z",
			"0.3.0-4-gabc1234 (commit abc123456789, built 2026-12-06T10:00:00Z, go1.26.8, " + platform + ")"},
		{"release from a changed tree", main("(devel)", nil), "abc1234-dirty", "ABC123456789def0abc123456789def0abc1234z", "",
			"abc1234-dirty (commit ABC123456789def0abc123456789def0abc1234z, go1.26.8, " + platform + ")"},
		{"a tagged checkout", main("v0.3.1", vcs), "", "", "",
			"0.3.1 (commit abc123456789, built 2026-12-01T09:00:00Z, go1.26.8, " + platform + ")"},
		{"changed since the commit", main("v0.3.2-0.20261201090000-abc123456789+dirty", dirty), "", "", "",
			"0.3.2-0.20261201090000-abc123456789+dirty (commit abc123456789+dirty, built 2026-12-01T09:00:00Z, go1.26.8, " + platform + ")"},
		{"go run", main("(devel)", nil), "", "", "",
			"devel (go1.26.8, " + platform + ")"},
		{"no build info", nil, "", "", "",
			"devel (" + runtime.Version() + ", " + platform + ")"},
		{"the SDK in another program", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "example.com/gateway", Version: "v1.0.0"},
			Deps:      []*debug.Module{{Path: "golang.org/x/sys", Version: "v0.49.0"}, {Path: modulePath, Version: "v0.4.0"}},
			Settings:  vcs, // the gateway's commit, not Tether's
		}, "", "", "", "0.4.0 (go1.26.8, " + platform + ")"},
		{"the SDK replaced", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "example.com/gateway"},
			Deps:      []*debug.Module{{Path: modulePath, Version: "v0.4.0", Replace: &debug.Module{Path: "../tether", Version: "(devel)"}}},
		}, "", "", "", "devel (go1.26.8, " + platform + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromBuildInfo(tc.bi, tc.version, tc.commit, tc.date).String(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// The test binary itself records no version of Tether's: it is devel,
// built by this toolchain for this platform.
func TestGet(t *testing.T) {
	in := Get()
	if in.GoVersion != runtime.Version() || in.Platform != runtime.GOOS+"/"+runtime.GOARCH || in.Version == "" {
		t.Errorf("Get() = %+v", in)
	}
	if want := "tetherd " + in.String(); Line("tetherd") != want {
		t.Errorf("Line = %q, want %q", Line("tetherd"), want)
	}
}
