// Command loadgen drives Hypersend or Centrifugo with the workloads of bench/side_by_side.py.
//
// It reads a plan (JSON, path in the first argument) and prints JSON lines on stdout: "connected"
// once the sockets are live, then per mode "measure_start"/"measure_end"/"result" (load),
// "step"/"result" (ramp), or waits for a line on stdin before closing (idle). Every mode has a
// hard deadline (plan.deadline_s): the process exits by itself. It dials only the plan's URL,
// which bench/side_by_side.py keeps on loopback.
package main

import (
	"bufio"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// User is one socket: who connects, with which token, following which room.
type User struct {
	ID    string `json:"id"`
	Token string `json:"token"`
	Room  string `json:"room"`
}

// Ramp describes the rate steps of the ramp mode.
type Ramp struct {
	StartRate float64 `json:"start_rate"`
	Factor    float64 `json:"factor"`
	StepS     float64 `json:"step_s"`
	MaxRate   float64 `json:"max_rate"`
	WithinS   float64 `json:"within_s"`
	MaxSteps  int     `json:"max_steps"`
}

// Plan is what bench/side_by_side.py asks for.
type Plan struct {
	Protocol           string  `json:"protocol"` // "hypersend" | "centrifugo"
	URL                string  `json:"url"`
	Mode               string  `json:"mode"` // "idle" | "load" | "ramp"
	Users              []User  `json:"users"`
	Deflate            bool    `json:"deflate"`
	ConnectConcurrency int     `json:"connect_concurrency"`
	ConnectTimeoutS    float64 `json:"connect_timeout_s"`
	WarmupS            float64 `json:"warmup_s"`
	Rate               float64 `json:"rate"` // load mode: messages per second, all users together
	DurationS          float64 `json:"duration_s"`
	SettleS            float64 `json:"settle_s"`
	TextBytes          int     `json:"text_bytes"`
	Ramp               Ramp    `json:"ramp"`
	HMACSecret         string  `json:"hmac_secret"` // centrifugo: signs the connection JWTs
	DeadlineS          float64 `json:"deadline_s"`
	HoldS              float64 `json:"hold_s"`
}

type phaseStats struct {
	sent, expected, acked, delivered, bytes, duplicates int64
	// messages an earlier workload sent (older than this process), delivered in this one:
	// a socket's gap fill reaching below where it went live, not a second copy (none since a
	// new socket starts at the room's highest seq: docs/architecture.md, "Going live without
	// resume")
	earlier int64
	latMs   []float32
	errors  map[string]int64
	// deliveries still due per message (by its send timestamp); complete ones are removed
	outstanding map[int64]int64
}

type stats struct {
	mu     sync.Mutex
	phases map[int]*phaseStats
	closed map[string]int64
}

func (s *stats) phase(p int) *phaseStats {
	ps, ok := s.phases[p]
	if !ok {
		ps = &phaseStats{errors: map[string]int64{}, outstanding: map[int64]int64{}}
		s.phases[p] = ps
	}
	return ps
}

var (
	out       = json.NewEncoder(os.Stdout)
	outMu     sync.Mutex
	st        = &stats{phases: map[int]*phaseStats{}, closed: map[string]int64{}}
	curPhase  atomic.Int64
	closing   atomic.Bool
	clientSeq atomic.Int64
	// Client ids are "c<run>-<n>": every run of bench/side_by_side.py sends into the same
	// database with the same users and rooms, and Hypersend answers a (sender, room, client id)
	// it has stored with that stored message (docs/protocol.md, "Idempotent sends"). Ids
	// counting from c1 in every run made a send whose sender had used the same id in an earlier
	// workload an acknowledged retry of the old message: the new text was never stored, so
	// no member could get it (issue #16: one "message some member never got" per quick run).
	runID = newRunID()
	// Texts carry their send time: one older than this process was not sent by this run.
	startNs = time.Now().UnixNano()
	// No proxy from the environment: the plan's (loopback) URL is dialled directly.
	httpClient = &http.Client{Transport: &http.Transport{Proxy: nil}}
)

func newRunID() string {
	var b [6]byte
	if _, err := cryptorand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

func emit(v map[string]any) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(v)
}

func fail(format string, args ...any) {
	emit(map[string]any{"event": "error", "error": fmt.Sprintf(format, args...)})
	os.Exit(2)
}

type conn struct {
	ws       *websocket.Conn
	user     *User
	proto    protocol
	live     chan struct{}
	liveOnce sync.Once
	failed   chan string
	nextID   atomic.Int64
	ready    atomic.Bool
}

func (c *conn) markLive() { c.liveOnce.Do(func() { close(c.live) }) }

func (c *conn) write(frame []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, frame); err != nil && !closing.Load() {
		st.mu.Lock()
		st.phase(int(curPhase.Load())).errors["write: "+errClass(err)]++
		st.mu.Unlock()
	}
}

func errClass(err error) string {
	if s := websocket.CloseStatus(err); s != -1 {
		return fmt.Sprintf("close %d", s)
	}
	msg := err.Error()
	if len(msg) > 60 {
		msg = msg[:60]
	}
	return msg
}

// delivery records one delivered message: its text carries "<unix ns> <phase> ".
func delivery(text string, size int) {
	now := time.Now().UnixNano()
	sentNs, phase, ok := parseText(text)
	if !ok {
		return
	}
	lat := float32(float64(now-sentNs) / 1e6)
	st.mu.Lock()
	if sentNs < startNs {
		// Sent before this process: counted apart, and never as a delivery, which would let
		// settle() end (delivered >= expected) with a message still missing.
		st.phase(int(curPhase.Load())).earlier++
		st.mu.Unlock()
		return
	}
	ps := st.phase(phase)
	due, ok := ps.outstanding[sentNs]
	if !ok {
		// Not due: a second copy (or a message of this run's that no member was due).
		ps.duplicates++
		st.mu.Unlock()
		return
	}
	ps.delivered++
	ps.bytes += int64(size)
	ps.latMs = append(ps.latMs, lat)
	if due <= 1 {
		delete(ps.outstanding, sentNs)
	} else {
		ps.outstanding[sentNs] = due - 1
	}
	st.mu.Unlock()
}

func ack() {
	st.mu.Lock()
	st.phase(int(curPhase.Load())).acked++
	st.mu.Unlock()
}

// staleAck reports whether an ack answers with a message this run did not send (its text's
// timestamp is older than the process): the send was taken for a retry of a stored message,
// so its own text was not stored and counting it as acknowledged would hide that.
func staleAck(storedText string) bool {
	ns, _, ok := parseText(storedText)
	return ok && ns < startNs
}

func serverError(code string) {
	st.mu.Lock()
	st.phase(int(curPhase.Load())).errors[code]++
	st.mu.Unlock()
}

func parseText(text string) (int64, int, bool) {
	ns, rest, ok := leadingInt(text)
	if !ok {
		return 0, 0, false
	}
	phase, _, ok := leadingInt(rest)
	return ns, int(phase), ok
}

// leadingInt parses the digits up to the first space (the hot path: no fmt, no allocation).
func leadingInt(s string) (int64, string, bool) {
	var n int64
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int64(s[i]-'0')
	}
	if i == 0 || i >= len(s) || s[i] != ' ' {
		return 0, "", false
	}
	return n, s[i+1:], true
}

// makeText returns a message text of `size` bytes and the send timestamp it carries.
func makeText(phase, size int) (string, int64) {
	ns := time.Now().UnixNano()
	head := fmt.Sprintf("%d %d ", ns, phase)
	if len(head) >= size {
		return head, ns
	}
	return head + strings.Repeat("x", size-len(head)), ns
}

func (c *conn) readLoop() {
	for {
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
			if !closing.Load() {
				select {
				case <-c.live:
					st.mu.Lock()
					st.closed[errClass(err)]++
					st.mu.Unlock()
				default:
					select {
					case c.failed <- errClass(err):
					default:
					}
				}
			}
			return
		}
		c.proto.handle(c, data)
	}
}

func dial(plan *Plan, user *User, proto protocol) (*conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mode := websocket.CompressionDisabled
	if plan.Deflate {
		// A browser's offer: plain "permessage-deflate", context takeover allowed.
		mode = websocket.CompressionContextTakeover
	}
	ws, _, err := websocket.Dial(ctx, plan.URL, &websocket.DialOptions{
		HTTPClient:      httpClient,
		CompressionMode: mode,
	})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	c := &conn{ws: ws, user: user, proto: proto, live: make(chan struct{}), failed: make(chan string, 1)}
	c.nextID.Store(10) // centrifugo: publish ids above the connect and subscribe ids
	go c.readLoop()
	c.proto.start(c, plan)
	select {
	case <-c.live:
		return c, nil
	case reason := <-c.failed:
		ws.CloseNow()
		return nil, fmt.Errorf("%s", reason)
	case <-ctx.Done():
		ws.CloseNow()
		return nil, fmt.Errorf("not live within 30s")
	}
}

func connectAll(plan *Plan, proto protocol) []*conn {
	started := time.Now()
	deadline := started.Add(time.Duration(plan.ConnectTimeoutS * float64(time.Second)))
	conns := make([]*conn, len(plan.Users))
	failures := map[string]int64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := atomic.Int64{}
	workers := max(1, plan.ConnectConcurrency)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(plan.Users) || time.Now().After(deadline) {
					return
				}
				c, err := dial(plan, &plan.Users[i], proto)
				if err != nil {
					mu.Lock()
					failures[errClass(err)]++
					mu.Unlock()
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	seconds := time.Since(started).Seconds()
	var live []*conn
	for _, c := range conns {
		if c != nil {
			live = append(live, c)
		}
	}
	notTried := int64(len(plan.Users)) - int64(len(live))
	for _, n := range failures {
		notTried -= n
	}
	if notTried > 0 {
		failures["connect timeout"] += notTried
	}
	emit(map[string]any{
		"event": "connected", "connected": len(live), "wanted": len(plan.Users),
		"seconds": seconds, "rate": float64(len(live)) / math.Max(seconds, 1e-9),
		"failures": failures,
	})
	return live
}

func closeAll(conns []*conn) {
	closing.Store(true)
	var wg sync.WaitGroup
	gate := make(chan struct{}, 256)
	for _, c := range conns {
		wg.Add(1)
		gate <- struct{}{}
		go func(c *conn) {
			defer wg.Done()
			defer func() { <-gate }()
			c.ws.CloseNow()
		}(c)
	}
	wg.Wait()
}

// schedule sends Poisson arrivals at `rate` per second from random live users until `until`;
// it returns how far behind its schedule a send went at worst (the generator's own limit).
func schedule(conns []*conn, members map[string]int64, rate float64, phase, textBytes int, until time.Time) time.Duration {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(phase)))
	next := time.Now()
	var maxLag time.Duration
	for {
		next = next.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		if next.After(until) {
			return maxLag
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else {
			maxLag = max(maxLag, -d)
		}
		c := conns[rng.IntN(len(conns))]
		text, ns := makeText(phase, textBytes)
		frame := c.proto.send(c, text)
		st.mu.Lock()
		ps := st.phase(phase)
		ps.sent++
		ps.expected += members[c.user.Room]
		ps.outstanding[ns] = members[c.user.Room]
		st.mu.Unlock()
		go c.write(frame)
	}
}

// settle waits until every expected delivery of `phase` arrived and every send was answered
// (ack or error), or `within` passed.
func settle(phase int, within time.Duration) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		st.mu.Lock()
		ps := st.phase(phase)
		answered := ps.acked
		for _, n := range ps.errors {
			answered += n
		}
		done := ps.delivered >= ps.expected && answered >= ps.sent
		st.mu.Unlock()
		if done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func percentile(sorted []float32, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Round(q / 100 * float64(len(sorted)-1)))
	return float64(sorted[i])
}

func summary(phase int, seconds float64) map[string]any {
	st.mu.Lock()
	defer st.mu.Unlock()
	ps := st.phase(phase)
	lat := append([]float32(nil), ps.latMs...)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res := map[string]any{
		"sent": ps.sent, "expected": ps.expected, "acked": ps.acked, "delivered": ps.delivered,
		"errors": ps.errors, "seconds": seconds, "delivery_bytes": ps.bytes,
		"p50_ms": nanToNil(percentile(lat, 50)), "p99_ms": nanToNil(percentile(lat, 99)),
		"max_ms": nanToNil(percentile(lat, 100)), "closed": st.closed,
		// Messages some member never got, and deliveries beyond one per member: these tell a
		// lost publish (a whole message missing) from lost frames (a few members missing).
		"incomplete_messages": len(ps.outstanding), "duplicates": ps.duplicates,
		"earlier_messages": ps.earlier,
	}
	return res
}

func nanToNil(v float64) any {
	if math.IsNaN(v) {
		return nil
	}
	return v
}

func roomMembers(conns []*conn) map[string]int64 {
	members := map[string]int64{}
	for _, c := range conns {
		members[c.user.Room]++
	}
	return members
}

func runLoad(plan *Plan, conns []*conn) {
	members := roomMembers(conns)
	time.Sleep(time.Duration(plan.WarmupS * float64(time.Second)))
	curPhase.Store(1)
	emit(map[string]any{"event": "measure_start"})
	started := time.Now()
	lag := schedule(conns, members, plan.Rate, 1, plan.TextBytes, started.Add(time.Duration(plan.DurationS*float64(time.Second))))
	sendSeconds := time.Since(started).Seconds()
	settle(1, time.Duration(plan.SettleS*float64(time.Second)))
	elapsed := time.Since(started).Seconds()
	emit(map[string]any{"event": "measure_end"})
	curPhase.Store(0)
	res := summary(1, elapsed)
	res["event"] = "result"
	res["schedule_lag_ms"] = float64(lag) / 1e6
	res["send_seconds"] = sendSeconds
	emit(res)
}

// cpuSeconds is this process's CPU time so far (user + system).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func runRamp(plan *Plan, conns []*conn) {
	members := roomMembers(conns)
	time.Sleep(time.Duration(plan.WarmupS * float64(time.Second)))
	r := plan.Ramp
	best := 0.0
	rate := r.StartRate
	// capped: every step passed (or the last failed because the generator was the limit), so the
	// highest rate is a lower bound of the server's, not its limit.
	capped := true
	emit(map[string]any{"event": "measure_start"})
	for step := 1; step <= r.MaxSteps && rate <= r.MaxRate; step++ {
		curPhase.Store(int64(step))
		started, cpuStarted := time.Now(), cpuSeconds()
		lag := schedule(conns, members, rate, step, plan.TextBytes, started.Add(time.Duration(r.StepS*float64(time.Second))))
		sendSeconds := time.Since(started).Seconds()
		settle(step, time.Duration((r.WithinS+0.5)*float64(time.Second)))
		driverCores := (cpuSeconds() - cpuStarted) / time.Since(started).Seconds()
		res := summary(step, sendSeconds)
		ps := res
		ok := ps["delivered"].(int64) >= ps["expected"].(int64) && ps["expected"].(int64) > 0 &&
			len(ps["errors"].(map[string]int64)) == 0
		if m, isNum := ps["max_ms"].(float64); !isNum || m > r.WithinS*1000 {
			ok = false
		}
		// The generator itself was the limit: its core was (nearly) full, or it fell behind its
		// send schedule. A failure then says nothing about the server.
		driverBound := driverCores >= 0.9 || lag > 250*time.Millisecond
		res["event"] = "step"
		res["rate"] = rate
		res["schedule_lag_ms"] = float64(lag) / 1e6
		res["driver_cores"] = driverCores
		res["driver_bound"] = driverBound
		res["ok"] = ok
		emit(res)
		if !ok {
			capped = driverBound
			break
		}
		best = rate
		rate *= r.Factor
	}
	emit(map[string]any{"event": "measure_end"})
	curPhase.Store(0)
	emit(map[string]any{"event": "result", "best_rate": best, "capped": capped})
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: loadgen PLAN.json")
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("reading the plan: %v", err)
	}
	var plan Plan
	if err := json.Unmarshal(raw, &plan); err != nil {
		fail("parsing the plan: %v", err)
	}
	var proto protocol
	switch plan.Protocol {
	case "hypersend":
		proto = hypersend{}
	case "centrifugo":
		proto = centrifugo{secret: []byte(plan.HMACSecret)}
	default:
		fail("unknown protocol %q", plan.Protocol)
	}
	if plan.TextBytes == 0 {
		plan.TextBytes = 100
	}
	time.AfterFunc(time.Duration(plan.DeadlineS*float64(time.Second)), func() {
		fail("deadline of %.0fs reached", plan.DeadlineS)
	})
	conns := connectAll(&plan, proto)
	if len(conns) == 0 {
		fail("no socket connected")
	}
	switch plan.Mode {
	case "idle":
		lines := make(chan struct{})
		go func() {
			bufio.NewReader(os.Stdin).ReadString('\n')
			close(lines)
		}()
		select {
		case <-lines:
		case <-time.After(time.Duration(plan.HoldS * float64(time.Second))):
		}
		st.mu.Lock()
		closed := st.closed
		st.mu.Unlock()
		emit(map[string]any{"event": "result", "closed": closed})
	case "load":
		runLoad(&plan, conns)
	case "ramp":
		runRamp(&plan, conns)
	default:
		fail("unknown mode %q", plan.Mode)
	}
	closeAll(conns)
	emit(map[string]any{"event": "done"})
}
