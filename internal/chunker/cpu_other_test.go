//go:build !linux

package chunker

import "time"

// threadCPU is not measured on this platform.
func threadCPU() time.Duration { return -1 }
