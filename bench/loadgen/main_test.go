package main

import (
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
