// Package wsguard keeps a fleet's WebSocket connections inside an exchange's
// limits, with the limits kept in Redis by package limiter, whatever the
// WebSocket library: it sees a connection only through Socket (package
// wsguard/wscoder adapts github.com/coder/websocket).
//
// A Guard charges, in every process that shares the limiter's Redis:
//
//   - each connection attempt to Options.Connect, fleet-wide (Binance: 300
//     connections per 5 minutes per IP, and 2 weight for a WebSocket API
//     connection). Dial and Redial book the attempt's turn and sleep until it
//     with limiter.Reservation.Wait, which books again past any hold placed
//     meanwhile: no attempt is made during a hold. Redial waits a random
//     jitter first, so a fleet whose connections all dropped does not
//     reconnect in one instant, and the quota bounds the storm.
//   - each message sent (Conn.Send, Conn.Subscribe) to a local limiter of its
//     connection (golang.org/x/time/rate: a connection lives in one process)
//     and, for a request Options.Charges prices (a WebSocket API request),
//     to the same quotas REST requests are charged to, through the same
//     limiter.Quota values: one state in Redis for both channels.
//
// The exchange's refusals (an error frame with retryAfter, a close code) are
// read by Options.Refusals from every message and close Conn.Read sees, and
// become holds (limiter.Limiter.Hold) on the quota they name, in every
// process; a handshake answered 429 or 418 (a dial function's HandshakeError)
// holds Options.Connect's quotas for its Retry-After. The guard computes no
// window and no hold of its own: the limiter decides when an attempt or a
// message may go, on Redis's clock.
//
// Subscribe checks a connection's stream count against Options.MaxStreams
// (Binance: 1024 streams per connection) before anything is sent.
//
// Most callers should use New with the Options package exchanges builds
// (BinanceWebSocket, BybitWebSocket, OKXWebSocket), Guard.Dial with
// wscoder.Dial, then Conn.Send, Conn.Subscribe, Conn.Read and, when the
// connection drops, Conn.Redial:
//
//	api, streams, err := exchanges.BinanceWebSocket(exchanges.BinanceOptions{})
//	g, err := wsguard.New(lim, streams)
//	c, err := g.Dial(ctx, wscoder.Dial("wss://stream.binance.com:9443/ws", nil))
//	err = c.Subscribe(ctx, []byte(`{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}`), 1)
//	msg, err := c.Read(ctx)
//
// Socket, Signal and Refusal matter only to those who adapt another
// WebSocket library or read another exchange's refusals.
package wsguard
