package links

import "testing"

// FuzzParseRange: a Range header of a file link never yields a range outside
// the file, whatever the header.
func FuzzParseRange(f *testing.F) {
	for _, h := range []string{"bytes=0-0", "bytes=5-", "bytes=-3", "bytes=9-2", "bytes=0-1,3-4", "bytes= 1 - 2 ", "bytes=-0", "items=1-2", "bytes=99999999999999999999-"} {
		f.Add(h, int64(10))
	}
	f.Add("bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, header string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 { // math.MinInt64
			return
		}
		start, length, ok, satisfiable := parseRange(header, size)
		if satisfiable && !ok {
			t.Fatalf("parseRange(%q, %d): satisfiable but not ok", header, size)
		}
		if satisfiable && (start < 0 || length < 1 || start > size-length) {
			t.Fatalf("parseRange(%q, %d) = [%d, +%d), outside the file", header, size, start, length)
		}
	})
}
