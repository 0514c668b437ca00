package agentcli

// stopProfile ends a CPU profile started by an agent built with -tags
// pprof (pprof.go); Main calls it before returning.
var stopProfile = func() {}
