//go:build race

package metastoretest

// RaceEnabled reports whether the race detector is on. The suite then uses
// smaller batches: the race detector slows the transpiled SQLite down about
// a hundredfold.
const RaceEnabled = true
