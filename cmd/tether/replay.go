package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/tether-io/tether/service"
)

// replayIdleCap bounds a pause of the replay: a session left idle for an
// hour replays its next output two seconds later, as asciinema's
// idle_time_limit does.
const replayIdleCap = 2 * time.Second

// replayRecording plays the recording of stream id (tetherd
// --record-terminals) to w with the session's timing, pauses capped.
func replayRecording(ctx context.Context, c *service.Client, id string, w io.Writer) error {
	rc, err := c.StreamRecording(ctx, id)
	if err != nil {
		var ae *service.APIError
		if errors.As(err, &ae) && ae.StatusCode == 404 {
			return fmt.Errorf("no recording of stream %s: %s", id, ae.Message)
		}
		return err
	}
	defer rc.Close()
	return playCast(ctx, rc, w, replayIdleCap)
}

// playCast writes the output events of asciicast v2 from r to w, each at
// its time, no pause longer than idleCap.
func playCast(ctx context.Context, r io.Reader, w io.Writer, idleCap time.Duration) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	if !sc.Scan() {
		return errors.New("the recording is empty")
	}
	var h struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Version != 2 {
		return errors.New("the recording is not asciicast v2")
	}
	var at time.Duration // the recording's time of the last event played
	start := time.Now()
	var shift time.Duration // pauses cut so far
	for line := 2; sc.Scan(); line++ {
		var ev []json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			return fmt.Errorf("recording line %d: not an event", line)
		}
		var secs float64
		var code, data string
		if json.Unmarshal(ev[0], &secs) != nil || json.Unmarshal(ev[1], &code) != nil || json.Unmarshal(ev[2], &data) != nil {
			return fmt.Errorf("recording line %d: not an event", line)
		}
		t := time.Duration(secs * float64(time.Second))
		if gap := t - at; gap > idleCap {
			shift += gap - idleCap
		}
		at = t
		if wait := time.Until(start.Add(t - shift)); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return nil
			}
		}
		if code == "o" {
			if _, err := io.WriteString(w, data); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the recording: %w", err)
	}
	return nil
}

// replayFlagUsage is logs' --replay.
var replayFlagUsage = "play the terminal session of stream `ID` as the hub recorded it (tetherd --record-terminals), pauses capped at " + strconv.Itoa(int(replayIdleCap.Seconds())) + " s"
