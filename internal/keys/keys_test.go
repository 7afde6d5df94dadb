package keys

import (
	"strings"
	"testing"
)

func TestEscapeRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", "a:b", "{tag}", "}{", "100%", "%7B", "ünï:{c}ode", strings.Repeat("{", 600)} {
		e := Escape(s)
		if strings.ContainsAny(e, "{}:") {
			t.Fatalf("Escape(%q) = %q still holds a separator", s, e)
		}
		back, err := Unescape(e)
		if err != nil || back != s {
			t.Fatalf("Unescape(Escape(%q)) = %q, %v", s, back, err)
		}
	}
}

func TestEscapeInjective(t *testing.T) {
	// Inputs that a naive escaper would map to the same key.
	in := []string{"a:b", "a%3Ab", "a%253Ab", "a}b", "a%7Db", "{a}"}
	seen := map[string]string{}
	for _, s := range in {
		e := Escape(s)
		if prev, ok := seen[e]; ok {
			t.Fatalf("Escape(%q) == Escape(%q) == %q", s, prev, e)
		}
		seen[e] = s
	}
}

func TestUnescapeRejectsMalformed(t *testing.T) {
	for _, s := range []string{"%", "%4", "%ZZ", "ab%g1"} {
		if _, err := Unescape(s); err == nil {
			t.Fatalf("Unescape(%q) accepted malformed input", s)
		}
	}
}

func TestCheck(t *testing.T) {
	if err := Check(""); err != ErrEmpty {
		t.Fatalf("Check(\"\") = %v", err)
	}
	if err := Check(strings.Repeat("x", MaxPartLen+1)); err != ErrTooLong {
		t.Fatalf("long key: %v", err)
	}
	if err := Check(strings.Repeat("x", MaxPartLen)); err != nil {
		t.Fatalf("max-length key: %v", err)
	}
}

func TestTagAndJoin(t *testing.T) {
	got := Join(Tag("rq", "bin:ance{x}"), "weight", "fixed")
	want := "rq:{bin%3Aance%7Bx%7D}:weight:fixed"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "a:b", "{x}", "%", "ü", strings.Repeat("}", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Escape(s)
		if strings.ContainsAny(e, "{}:") {
			t.Fatalf("separator survived escaping: %q", e)
		}
		back, err := Unescape(e)
		if err != nil || back != s {
			t.Fatalf("round trip of %q gave %q, %v", s, back, err)
		}
	})
}

func TestSlot(t *testing.T) {
	// Values from Redis's CLUSTER KEYSLOT.
	for key, want := range map[string]int{"foo": 12182, "{user1000}.following": 3443, "{user1000}.followers": 3443, "foo{}{bar}": 8363, "123456789": 12739} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	if HashTag("a{}b{c}") != "a{}b{c}" || HashTag("x{tag}y") != "tag" {
		t.Fatal("HashTag")
	}
}
