package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
)

// StreamRecording reads the recording of a terminal session (GET
// /streams/{id}/recording; the policy needs RegistryRead): asciicast v2,
// as a hub started with tetherd --record-terminals writes it on the node
// that relayed the stream. The caller closes the reader. A stream with no
// recording there is an *APIError with status 404.
func (c *Client) StreamRecording(ctx context.Context, streamID string) (io.ReadCloser, error) {
	if streamID == "" {
		return nil, errors.New("service: no stream id")
	}
	req, err := c.newRequest(ctx, "GET", "/streams/"+url.PathEscape(streamID)+"/recording", nil)
	if err != nil {
		return nil, err
	}
	// Not through do: a recording may be larger than an API answer.
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ctxErr)
		}
		return nil, &hubError{addr: c.cs.Address(), err: err}
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		return nil, apiError(resp, body)
	}
	return resp.Body, nil
}
