package id

import (
	"errors"
	"testing"
)

func TestSumKnownVector(t *testing.T) {
	// BLAKE3 of the empty input, from the BLAKE3 reference test vectors.
	const empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	if got := Sum(nil).String(); got != empty {
		t.Fatalf("Sum(nil) = %s, want %s", got, empty)
	}
	h := NewHasher()
	_, _ = h.Write([]byte("ab"))
	_, _ = h.Write([]byte("c"))
	if h.Sum() != Sum([]byte("abc")) {
		t.Fatal("incremental hash differs from one-shot hash")
	}
}

func TestParse(t *testing.T) {
	good := Sum([]byte("x"))
	tests := []struct {
		name string
		in   string
		want ID
		err  bool
	}{
		{"roundtrip", good.String(), good, false},
		{"empty", "", ID{}, true},
		{"short", good.String()[:63], ID{}, true},
		{"long", good.String() + "0", ID{}, true},
		{"nonhex", "zz" + good.String()[2:], ID{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.err {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse(%q) err = %v, want ErrInvalid", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %v, %v", tt.in, got, err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Sum(nil).String())
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(v.String())
		if err != nil || back != v {
			t.Fatalf("roundtrip of %q failed", s)
		}
	})
}
