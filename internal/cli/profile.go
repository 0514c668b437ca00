//go:build !pprof

package cli

// StartProfiling starts what SANDKEEP_CPUPROFILE and SANDKEEP_PPROF ask
// for, in binaries built with -tags pprof only (profile_pprof.go); here it
// does nothing. stop ends the CPU profile.
func StartProfiling(string) (stop func()) { return func() {} }
