package main

import (
	"fmt"
	"strings"
	"testing"
)

func TestTextCarriesTimestampAndPhase(t *testing.T) {
	text, sent := makeText(7, 100)
	if len(text) != 100 {
		t.Fatalf("text is %d bytes, want 100", len(text))
	}
	ns, phase, ok := parseText(text)
	if !ok || phase != 7 || ns != sent {
		t.Fatalf("parseText(%q) = %d, %d, %v", text, ns, phase, ok)
	}
	for _, bad := range []string{"", "x 1 ", "123", "123 x", "12 3"} {
		if _, _, ok := parseText(bad); ok {
			t.Errorf("parseText(%q) accepted", bad)
		}
	}
}

func TestFieldsOfBothProtocols(t *testing.T) {
	hs := []byte(`{"type": "message", "room_id": "r1", "seq": 4, "message": {"id": "r1:4", "text": "123 1 xx", "edits": []}}`)
	if typ, _ := stringField(hs, "type"); typ != "message" {
		t.Errorf("type = %q", typ)
	}
	if text, _ := stringField(hs, "text"); text != "123 1 xx" {
		t.Errorf("text = %q", text)
	}
	cf := []byte(`{"id":12,"error":{"code":103,"message":"permission denied"}}`)
	if id, ok := intField(cf, "id"); !ok || id != 12 {
		t.Errorf("id = %d %v", id, ok)
	}
	if code, ok := intField(cf, "code"); !ok || code != 103 {
		t.Errorf("code = %d %v", code, ok)
	}
	if _, ok := stringField(cf, "missing"); ok {
		t.Error("a missing field was found")
	}
}

func TestCentrifugoTokenIsHS256(t *testing.T) {
	token := centrifugo{secret: []byte("s3cret")}.token("u1")
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	// The same input signs the same way; another secret signs differently.
	other := centrifugo{secret: []byte("other")}.token("u1")
	if strings.Split(other, ".")[2] == parts[2] {
		t.Error("the signature does not depend on the secret")
	}
}

func TestClientIDsDifferBetweenRuns(t *testing.T) {
	// Every run sends into the same database with the same users: an id of an earlier run
	// would make the send a retry of that run's stored message.
	if a, b := newRunID(), newRunID(); a == b {
		t.Fatalf("two runs got the same id %q", a)
	}
	id := clientID(1)
	if !strings.HasPrefix(id, "c"+runID+"-") || len(id) > 64 {
		t.Fatalf("clientID(1) = %q", id)
	}
	for _, r := range id {
		if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789-", r) {
			t.Fatalf("clientID(1) = %q has %q, outside the protocol's client_id alphabet", id, r)
		}
	}
}

func TestAckOfAnEarlierRunsMessageIsNoAck(t *testing.T) {
	mine, _ := makeText(1, 100)
	if staleAck(mine) {
		t.Errorf("an ack of this run's text %q counted as stale", mine)
	}
	if !staleAck(fmt.Sprintf("%d 1 xx", startNs-1)) {
		t.Error("an ack of a text older than the run counted as this run's")
	}
	if staleAck("not a bench text") {
		t.Error("a text without a timestamp counted as stale")
	}
	ackOf := func(text string) []byte {
		return []byte(`{"type":"ack","room_id":"r1","client_id":"c1","seq":3,"message":{"id":"r1:3","text":` + quote(text) + `,"edits":[]}}`)
	}
	before := *st.phase(0)
	hypersend{}.handle(&conn{}, ackOf(fmt.Sprintf("%d 1 xx", startNs-1)))
	hypersend{}.handle(&conn{}, ackOf(mine))
	after := st.phase(0)
	if after.acked != before.acked+1 {
		t.Errorf("acked went from %d to %d, want one more (this run's)", before.acked, after.acked)
	}
	if n := after.errors["ack of an earlier run's message (client_id reused)"]; n != 1 {
		t.Errorf("stale acks counted as errors: %d, want 1", n)
	}
}

func TestOnlyDueDeliveriesCount(t *testing.T) {
	text, ns := makeText(9, 100)
	st.mu.Lock()
	st.phase(9).outstanding[ns] = 1
	st.mu.Unlock()
	curPhase.Store(9)
	defer curPhase.Store(0)
	delivery(text, 200)
	delivery(text, 200)                              // a second copy
	delivery(fmt.Sprintf("%d 9 xx", ns-1), 200)      // a message of this run no member was due
	delivery(fmt.Sprintf("%d 3 xx", startNs-1), 200) // an earlier workload's, filled in
	ps := st.phase(9)
	if ps.delivered != 1 || ps.duplicates != 2 || len(ps.latMs) != 1 || ps.bytes != 200 {
		t.Errorf("delivered %d, duplicates %d, latencies %d, bytes %d; want 1, 2, 1, 200",
			ps.delivered, ps.duplicates, len(ps.latMs), ps.bytes)
	}
	if ps.earlier != 1 || st.phase(3).duplicates != 0 {
		t.Errorf("earlier %d, duplicates of phase 3 %d; want 1, 0", ps.earlier, st.phase(3).duplicates)
	}
	if len(ps.outstanding) != 0 {
		t.Errorf("still outstanding: %v", ps.outstanding)
	}
}
