package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// protocol is one server's wire format: handshake, one send, and what a received frame means.
type protocol interface {
	start(c *conn, plan *Plan)
	handle(c *conn, data []byte)
	send(c *conn, text string) []byte
}

// stringField returns the JSON string value of the first `"key":` in data (no escapes expected:
// the fields read here are types, codes and the bench's own ASCII text).
func stringField(data []byte, key string) (string, bool) {
	i := bytes.Index(data, []byte(`"`+key+`"`))
	if i < 0 {
		return "", false
	}
	rest := bytes.TrimLeft(data[i+len(key)+2:], " ")
	if len(rest) == 0 || rest[0] != ':' {
		return "", false
	}
	rest = bytes.TrimLeft(rest[1:], " ")
	if len(rest) == 0 || rest[0] != '"' {
		return "", false
	}
	end := bytes.IndexByte(rest[1:], '"')
	if end < 0 {
		return "", false
	}
	return string(rest[1 : 1+end]), true
}

// intField returns the JSON integer value of the first `"key":` in data.
func intField(data []byte, key string) (int64, bool) {
	i := bytes.Index(data, []byte(`"`+key+`"`))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimLeft(data[i+len(key)+2:], " ")
	if len(rest) == 0 || rest[0] != ':' {
		return 0, false
	}
	rest = bytes.TrimLeft(rest[1:], " ")
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return n, err == nil
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// hypersend speaks docs/protocol.md: auth as the first frame, then ping to go live at once
// (live events are held until the first frame after auth); live once `ready` and the `pong`
// answering that ping arrived.
type hypersend struct{}

func (hypersend) start(c *conn, _ *Plan) {
	c.write([]byte(`{"type":"auth","token":` + quote(c.user.Token) + `}`))
	c.write([]byte(`{"type":"ping"}`))
}

func (hypersend) handle(c *conn, data []byte) {
	typ, _ := stringField(data, "type")
	switch typ {
	case "message":
		if text, ok := stringField(data, "text"); ok {
			delivery(text, len(data))
		}
	case "ack":
		// The ack carries the stored message; its first "text" is that message's text.
		if text, ok := stringField(data, "text"); ok && staleAck(text) {
			serverError("ack of an earlier run's message (client_id reused)")
			return
		}
		ack()
	case "ready":
		c.ready.Store(true) // the pong that follows makes the socket live
	case "pong":
		if c.ready.Load() {
			c.markLive()
		}
	case "ping":
		go c.write([]byte(`{"type":"pong"}`))
	case "error":
		code, _ := stringField(data, "code")
		select {
		case <-c.live:
			serverError(code)
		default:
			select {
			case c.failed <- "error " + code:
			default:
			}
		}
	}
}

func (hypersend) send(c *conn, text string) []byte {
	id := clientSeq.Add(1)
	return []byte(`{"type":"send","room_id":` + quote(c.user.Room) + `,"client_id":"` +
		clientID(id) + `","text":` + quote(text) + `}`)
}

// clientID is the client id of this run's send number n (see runID).
func clientID(n int64) string {
	return "c" + runID + "-" + strconv.FormatInt(n, 10)
}

// centrifugo speaks Centrifugo's JSON protocol (v2, bidirectional): connect with a JWT, then
// subscribe to the room's channel; live once the subscribe reply arrived. Server pings are
// empty objects answered with empty objects. Several replies/pushes may share one frame,
// one JSON object per line.
type centrifugo struct{ secret []byte }

const (
	connectID   = 1
	subscribeID = 2
)

func (p centrifugo) token(user string) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims := enc.EncodeToString([]byte(fmt.Sprintf(`{"sub":%s,"exp":%d}`,
		quote(user), time.Now().Add(4*time.Hour).Unix())))
	mac := hmac.New(sha256.New, p.secret)
	mac.Write([]byte(header + "." + claims))
	return header + "." + claims + "." + enc.EncodeToString(mac.Sum(nil))
}

func (p centrifugo) start(c *conn, _ *Plan) {
	c.write([]byte(fmt.Sprintf(`{"id":%d,"connect":{"token":%s,"name":"bench"}}`,
		connectID, quote(p.token(c.user.ID)))))
}

func (p centrifugo) handle(c *conn, data []byte) {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		p.handleLine(c, line)
	}
}

func (p centrifugo) handleLine(c *conn, line []byte) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	if bytes.Equal(bytes.TrimSpace(line), []byte("{}")) {
		go c.write([]byte("{}"))
		return
	}
	if bytes.HasPrefix(line, []byte(`{"push"`)) {
		if bytes.Contains(line, []byte(`"pub"`)) {
			if text, ok := stringField(line, "text"); ok {
				delivery(text, len(line))
			}
		}
		return
	}
	id, _ := intField(line, "id")
	if bytes.Contains(line, []byte(`"error"`)) {
		code, _ := intField(line, "code")
		reason := "error " + strconv.FormatInt(code, 10)
		if msg, ok := stringField(line, "message"); ok {
			reason += " " + msg
		}
		if id == connectID || id == subscribeID {
			select {
			case c.failed <- reason:
			default:
			}
			return
		}
		serverError(reason)
		return
	}
	switch id {
	case connectID:
		go c.write([]byte(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%s}}`,
			subscribeID, quote(c.user.Room))))
	case subscribeID:
		c.markLive()
	default:
		if id > subscribeID {
			ack()
		}
	}
}

func (p centrifugo) send(c *conn, text string) []byte {
	id := c.nextID.Add(1)
	return []byte(fmt.Sprintf(`{"id":%d,"publish":{"channel":%s,"data":{"text":%s}}}`,
		id, quote(c.user.Room), quote(text)))
}
