package service

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/tether-io/tether/wire"
)

// LogQuery selects stream-log records.
type LogQuery struct {
	DeviceID string    // empty: every device
	Since    time.Time // zero: everything the hub keeps
	// After selects the records after the one whose Sequence it is:
	// where a reader that lost its connection left off. Zero: from the
	// first.
	After uint64
	// Last keeps only the newest Last records of those selected (the hub
	// takes 1 to 100,000); zero keeps them all.
	Last int
	// Follow keeps the call open and passes new records as they are
	// written, until ctx ends.
	Follow bool
}

// ErrLogsInterrupted is wrapped by the error of a StreamLogs call whose
// connection to the hub ended before the call was done: the hub
// restarted or drained, or the network failed. A follower resumes with
// LogQuery.After set to the Sequence of the last record it was passed: it
// then misses none and sees none twice.
var ErrLogsInterrupted = errors.New("stream logs interrupted")

// StreamLogs calls fn with each selected stream-log record, oldest first,
// its Sequence set (GET /streamlogs; the policy needs RegistryRead). With
// q.Follow it returns nil when ctx ends. An error from fn stops it and is
// returned.
func (c *Client) StreamLogs(ctx context.Context, q LogQuery, fn func(wire.StreamLog) error) error {
	if q.Last < 0 {
		return errors.New("service: LogQuery.Last is negative")
	}
	v := url.Values{}
	if q.DeviceID != "" {
		v.Set("deviceId", q.DeviceID)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if q.After > 0 {
		v.Set("after", strconv.FormatUint(q.After, 10))
	}
	if q.Last > 0 {
		v.Set("last", strconv.Itoa(q.Last))
	}
	if q.Follow {
		v.Set("follow", "true")
	}
	path := "/streamlogs"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	req, err := c.newRequest(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			if q.Follow {
				return nil
			}
			return ctxErr
		}
		return &hubError{addr: c.cs.Address(), err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		return apiError(resp, body)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec wire.StreamLog
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("service: stream logs: malformed record: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	err = sc.Err()
	if ctx.Err() != nil {
		if q.Follow {
			return nil
		}
		return ctx.Err()
	}
	if err == nil && q.Follow {
		// A follow ends only with ctx: the hub went away (a node
		// draining ends its followers).
		err = errors.New("the hub ended its answer")
	}
	if err != nil {
		return fmt.Errorf("hub %s: %w: %w", c.cs.Address(), ErrLogsInterrupted, err)
	}
	return nil
}

// KillStream ends the open stream with the id GET /streams lists
// (wire.StreamInfo.ID), on whichever hub node is its home (DELETE
// /streams/{id}; the policy needs ServiceConnect, and its name goes in the
// stream's log record: closed by the hub, "killed by policy NAME"). Both
// sides see the stream end with close 1008. The error wraps
// ErrStreamNotFound when no node holds it. Azure has no such call.
func (c *Client) KillStream(ctx context.Context, streamID string) error {
	if streamID == "" {
		return errors.New("service: no stream id")
	}
	return c.call(ctx, "DELETE", "/streams/"+url.PathEscape(streamID), nil, nil, nil)
}

// Streams lists the streams open now on every hub node (GET /streams; the
// policy needs RegistryRead), optionally of one device only.
func (c *Client) Streams(ctx context.Context, deviceID string) ([]wire.StreamInfo, error) {
	path := "/streams"
	if deviceID != "" {
		path += "?deviceId=" + url.QueryEscape(deviceID)
	}
	var out []wire.StreamInfo
	if err := c.call(ctx, "GET", path, nil, &out, nil); err != nil {
		return nil, err
	}
	return out, nil
}
