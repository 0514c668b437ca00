package urlsign

import (
	"bytes"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

var testKey = bytes.Repeat([]byte{0x5a}, 32)

func mustSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := New(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewKeyLength(t *testing.T) {
	if _, err := New(make([]byte, MinKeyLen-1)); err == nil {
		t.Error("New accepted a short key")
	}
	if _, err := New(make([]byte, MinKeyLen)); err != nil {
		t.Errorf("New(%d bytes) = %v", MinKeyLen, err)
	}
}

func TestNewCopiesKey(t *testing.T) {
	key := bytes.Clone(testKey)
	s, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	q := s.Sign("GET", "/p", now.Add(time.Minute), nil)
	key[0] ^= 1
	v, _ := url.ParseQuery(q)
	if err := s.Verify("GET", "/p", v, now); err != nil {
		t.Fatalf("Verify after mutating the caller's key slice: %v", err)
	}
}

func TestVerify(t *testing.T) {
	s := mustSigner(t)
	other, err := New(bytes.Repeat([]byte{0x33}, 32))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	exp := now.Add(10 * time.Minute)
	const path = "/v1/blobs/projects/p/packs/ab/x y"
	signed := s.Sign("PUT", path, exp, url.Values{"size": {"123"}})

	parse := func(q string) url.Values {
		v, err := url.ParseQuery(q)
		if err != nil {
			t.Fatalf("ParseQuery(%q): %v", q, err)
		}
		return v
	}
	edit := func(f func(url.Values)) url.Values {
		v := parse(signed)
		f(v)
		return v
	}

	tests := []struct {
		name   string
		method string
		path   string
		query  url.Values
		now    time.Time
		want   error // nil, ErrBadSignature or ErrExpired
	}{
		{"valid", "PUT", path, parse(signed), now, nil},
		{"valid until the last second", "PUT", path, parse(signed), exp.Add(-time.Second), nil},
		{"expired at exp", "PUT", path, parse(signed), exp, ErrExpired},
		{"expired later", "PUT", path, parse(signed), exp.Add(time.Hour), ErrExpired},
		{"tampered method", "GET", path, parse(signed), now, ErrBadSignature},
		{"tampered path", "PUT", path + "z", parse(signed), now, ErrBadSignature},
		{"path prefix", "PUT", "/v1/blobs/projects/p", parse(signed), now, ErrBadSignature},
		{"tampered exp", "PUT", path, edit(func(v url.Values) { v.Set("exp", "99999999999") }), now, ErrBadSignature},
		{"tampered exp on expired URL", "PUT", path, edit(func(v url.Values) { v.Set("exp", "99999999999") }), exp.Add(time.Hour), ErrBadSignature},
		{"tampered extra", "PUT", path, edit(func(v url.Values) { v.Set("size", "124") }), now, ErrBadSignature},
		{"removed extra", "PUT", path, edit(func(v url.Values) { v.Del("size") }), now, ErrBadSignature},
		{"added param", "PUT", path, edit(func(v url.Values) { v.Set("x", "1") }), now, ErrBadSignature},
		{"duplicated extra", "PUT", path, edit(func(v url.Values) { v.Add("size", "123") }), now, ErrBadSignature},
		{"missing sig", "PUT", path, edit(func(v url.Values) { v.Del("sig") }), now, ErrBadSignature},
		{"two sigs", "PUT", path, edit(func(v url.Values) { v.Add("sig", v.Get("sig")) }), now, ErrBadSignature},
		{"missing exp", "PUT", path, edit(func(v url.Values) { v.Del("exp") }), now, ErrBadSignature},
		{"garbage exp", "PUT", path, edit(func(v url.Values) { v.Set("exp", "soon") }), now, ErrBadSignature},
		{"garbage sig", "PUT", path, edit(func(v url.Values) { v.Set("sig", "!!!not base64!!!") }), now, ErrBadSignature},
		{"non-canonical sig", "PUT", path, edit(func(v url.Values) { v.Set("sig", nonCanonical(v.Get("sig"))) }), now, ErrBadSignature},
		{"short sig", "PUT", path, edit(func(v url.Values) { v.Set("sig", v.Get("sig")[:20]) }), now, ErrBadSignature},
		{"flipped sig", "PUT", path, edit(func(v url.Values) {
			b := []byte(v.Get("sig"))
			if b[0] == 'A' {
				b[0] = 'B'
			} else {
				b[0] = 'A'
			}
			v.Set("sig", string(b))
		}), now, ErrBadSignature},
		{"other key", "PUT", path, parse(other.Sign("PUT", path, exp, url.Values{"size": {"123"}})), now, ErrBadSignature},
		{"empty query", "PUT", path, url.Values{}, now, ErrBadSignature},
		{"nil query", "PUT", path, nil, now, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Verify(tt.method, tt.path, tt.query, tt.now)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Verify = %v, want nil", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			case errors.Is(err, ErrExpired) && errors.Is(err, ErrBadSignature):
				t.Fatalf("Verify = %v wraps both errors", err)
			}
		})
	}
}

func TestSignQueryShape(t *testing.T) {
	s := mustSigner(t)
	exp := time.Unix(1_700_000_600, 999_000_000)
	q := s.Sign("GET", "/a", exp, url.Values{"b": {"2", "1"}, "a": {"x"}})
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Get("exp"); got != "1700000600" {
		t.Errorf("exp = %q, want 1700000600", got)
	}
	if sig := v.Get("sig"); len(sig) != 43 || strings.ContainsAny(sig, "+/=") {
		t.Errorf("sig = %q, want 43 chars of unpadded base64url", sig)
	}
	if v.Get("a") != "x" || len(v["b"]) != 2 {
		t.Errorf("extra params lost: %v", v)
	}
	// Values of a parameter may be reordered without breaking the MAC.
	v["b"] = []string{"1", "2"}
	if err := s.Verify("GET", "/a", v, exp.Add(-time.Minute)); err != nil {
		t.Errorf("Verify with reordered values: %v", err)
	}
	// Signing is deterministic.
	if q2 := s.Sign("GET", "/a", exp, url.Values{"b": {"2", "1"}, "a": {"x"}}); q2 != q {
		t.Errorf("Sign not deterministic: %q vs %q", q, q2)
	}
}

func TestAmbiguousInputsDiffer(t *testing.T) {
	s := mustSigner(t)
	exp := time.Unix(2_000_000_000, 0)
	now := exp.Add(-time.Minute)
	// The same bytes split differently between method and path, or between
	// parameter name and value, must not verify.
	q, _ := url.ParseQuery(s.Sign("GE", "T/x", exp, nil))
	if err := s.Verify("GET", "/x", q, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("method/path boundary: %v", err)
	}
	q, _ = url.ParseQuery(s.Sign("GET", "/x", exp, url.Values{"ab": {"c"}}))
	q2 := url.Values{"a": {"bc"}, "exp": q["exp"], "sig": q["sig"]}
	if err := s.Verify("GET", "/x", q2, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("param name/value boundary: %v", err)
	}
}

func TestSignReservedParamPanics(t *testing.T) {
	s := mustSigner(t)
	for _, k := range []string{"exp", "sig"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Sign with extra %q did not panic", k)
				}
			}()
			s.Sign("GET", "/", time.Now(), url.Values{k: {"1"}})
		}()
	}
}

func FuzzVerify(f *testing.F) {
	s, err := New(testKey)
	if err != nil {
		f.Fatal(err)
	}
	exp := time.Unix(1_700_000_600, 0)
	f.Add("GET", "/v1/blobs/a", s.Sign("GET", "/v1/blobs/a", exp, nil), int64(1_700_000_000))
	f.Add("PUT", "/v1/blobs/a", s.Sign("PUT", "/v1/blobs/a", exp, url.Values{"size": {"5"}}), int64(1_700_000_000))
	f.Add("PUT", "/", "exp=1&sig=", int64(0))
	f.Add("", "", "sig=%zz&exp=-1&exp=2", int64(-1))
	f.Fuzz(func(t *testing.T, method, path, rawQuery string, now int64) {
		q, _ := url.ParseQuery(rawQuery) // partial results are fine
		err := s.Verify(method, path, q, time.Unix(now, 0))
		if err != nil && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrExpired) {
			t.Fatalf("Verify error %v wraps neither sentinel", err)
		}
		if err == nil || errors.Is(err, ErrExpired) {
			// The signature matched: it must be the one Sign produces.
			n, perr := strconv.ParseInt(q.Get("exp"), 10, 64)
			e := time.Unix(n, 0)
			extra := url.Values{}
			for k, vs := range q {
				if k != "exp" && k != "sig" {
					extra[k] = vs
				}
			}
			want, _ := url.ParseQuery(s.Sign(method, path, e, extra))
			if perr != nil || want.Get("sig") != q.Get("sig") {
				t.Fatalf("Verify accepted %q for %s %q but Sign gives %q", rawQuery, method, path, want.Get("sig"))
			}
		}
	})
}

// nonCanonical returns sig with the unused low bits of its last character
// set: it decodes to the same bytes under a lax decoder.
func nonCanonical(sig string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, sig[len(sig)-1])
	return sig[:len(sig)-1] + string(alphabet[i|3])
}
