package exchanges

import (
	"bytes"
	"io"
	"net/http"
)

// maxBody is the most of a request's body the middleware hands a rule's
// Charges (64 KiB; a longer one is cut there and has one more byte).
const maxBody = 64 << 10

// peekBody returns up to n bytes from the start of resp's body, and puts them
// back: the caller of the transport still reads the whole body (and a read
// error where the peek met one), and closing it closes the original.
func peekBody(resp *http.Response, n int64) []byte {
	b, err := io.ReadAll(io.LimitReader(resp.Body, n))
	rest := io.Reader(resp.Body)
	if err != nil {
		rest = errReader{err}
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), rest), resp.Body}
	return b
}

// errReader fails every read with err.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
