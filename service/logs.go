package service

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/tether-io/tether/wire"
)

// LogQuery selects stream-log records.
type LogQuery struct {
	DeviceID string    // empty: every device
	Since    time.Time // zero: everything the hub keeps
	// Follow keeps the call open and passes new records as they are
	// written, until ctx ends.
	Follow bool
}

// StreamLogs calls fn with each selected stream-log record, oldest first
// (GET /streamlogs; the policy needs RegistryRead). With q.Follow it
// returns nil when ctx ends. An error from fn stops it and is returned.
func (c *Client) StreamLogs(ctx context.Context, q LogQuery, fn func(wire.StreamLog) error) error {
	v := url.Values{}
	if q.DeviceID != "" {
		v.Set("deviceId", q.DeviceID)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
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
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil && q.Follow {
			return nil
		}
		return &hubError{addr: c.cs.Address(), err: fmt.Errorf("reading stream logs: %w", err)}
	}
	return nil
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
