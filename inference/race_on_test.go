//go:build race

package inference

// raceEnabled: the race detector allocates on its own (and sync.Pool drops items on purpose),
// so allocation counts are only checked without it.
const raceEnabled = true
