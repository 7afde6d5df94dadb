// Package wscoder adapts github.com/coder/websocket to package wsguard, so
// that the guard itself depends on no WebSocket library.
package wscoder

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coder/websocket"

	"github.com/redquota/redquota/wsguard"
)

// Dial returns a dial function for wsguard.Guard.Dial that opens url with opts (nil for the
// defaults), for wsguard.Guard.Dial. A handshake the server answers with an
// HTTP status other than 101 fails with an error wrapping a
// *wsguard.HandshakeError, which the guard learns from (a 429 holds the
// connection quota).
func Dial(url string, opts *websocket.DialOptions) func(context.Context) (wsguard.Socket, error) {
	return func(ctx context.Context) (wsguard.Socket, error) {
		c, resp, err := websocket.Dial(ctx, url, opts)
		if err != nil {
			if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
				return nil, fmt.Errorf("%w (%w)", &wsguard.HandshakeError{StatusCode: resp.StatusCode, Header: resp.Header}, err)
			}
			return nil, err
		}
		return Wrap(c), nil
	}
}

// Wrap adapts an open connection. Messages are sent as text frames (JSON);
// a close frame received ends Read with an error wrapping a
// *wsguard.CloseError. As with coder/websocket itself, a Read or Write whose
// context ends closes the connection; its error then wraps the context's.
func Wrap(c *websocket.Conn) wsguard.Socket { return socket{c} }

type socket struct{ c *websocket.Conn }

func (s socket) Read(ctx context.Context) ([]byte, error) {
	_, msg, err := s.c.Read(ctx)
	if err != nil {
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("%w (%w)", &wsguard.CloseError{Code: int(ce.Code), Reason: ce.Reason}, err)
		}
		return nil, ctxErr(ctx, err)
	}
	return msg, nil
}

// ctxErr is err, wrapping ctx's error when ctx has ended: coder/websocket
// closes the connection when a Read's or Write's context ends, and its error
// then says only that the connection is closed.
func ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

func (s socket) Write(ctx context.Context, msg []byte) error {
	return ctxErr(ctx, s.c.Write(ctx, websocket.MessageText, msg))
}

func (s socket) Close(code int, reason string) error {
	return s.c.Close(websocket.StatusCode(code), reason)
}
