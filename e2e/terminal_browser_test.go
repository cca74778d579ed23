package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/internal/procstat"
)

// TestTerminalInBrowser runs the console's Terminal tests
// (testdata/console/terminal.mjs) in Chromium against tetherd and an agent
// serving @shell with bash: a command's output, the size following the
// page, UTF-8 both ways, copy and paste, the shell gone once the tab
// closed, and the session, recorded by the hub, replayed from the Logs
// page. With TETHER_CONSOLE_DOCS=1 its screenshots replace
// docs/console/terminal.png and replay.png.
func TestTerminalInBrowser(t *testing.T) {
	node, chromium := browserTools(t)
	tools := needTools(t, "bash")
	t.Parallel()
	tetherd, tether := buildBinaries(t)
	h := startProcHubOf(t, tetherd, tether, "--record-terminals")
	h.startShellAgent(t, "term-1", tools["bash"])
	link, stderr, err := runCmd(t, h.env, h.tether, "console", "--no-open")
	if err != nil {
		t.Fatalf("tether console: %v: %s", err, stderr)
	}
	answer := func(raw string) map[string]any {
		var req struct {
			Do  string `json:"do"`
			PID int    `json:"pid"`
		}
		if err := json.Unmarshal([]byte(raw), &req); err != nil || req.Do != "gone" || req.PID <= 0 {
			return map[string]any{"error": "unknown request " + raw}
		}
		// No event tells that a process ended elsewhere: poll /proc.
		deadline := time.Now().Add(30 * time.Second)
		for procstat.Alive(req.PID) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		return map[string]any{"gone": !procstat.Alive(req.PID)}
	}
	shots := t.ArtifactDir()
	runBrowserScript(t, node, "terminal.mjs", answer,
		"TETHER_CONSOLE_LINK="+strings.TrimSpace(link),
		"TETHER_SHOTS="+shots,
		"CHROMIUM="+chromium)
	if os.Getenv("TETHER_CONSOLE_DOCS") == "1" {
		copyShots(t, shots, filepath.Join("..", "docs", "console"))
	}
}
