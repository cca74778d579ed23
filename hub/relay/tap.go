package relay

// Tap sees the payload bytes of one paired stream as the relay delivers
// them, for the hub's terminal recording. Data is called from the stream's
// two copy loops, one per direction, possibly at once; p is valid only
// during the call. Close is called once, after the last Data. A Tap that
// blocks holds its stream back: it must write, not wait.
type Tap interface {
	Data(toDevice bool, p []byte)
	Close()
}
