package server

import (
	"runtime"
	"syscall"
)

// backgroundThread pins the calling goroutine to its own OS thread and lowers that thread's
// scheduling priority, so that the work it does (decoding the next frame and running the
// detector on it) takes the cores that pose estimation on the current frame leaves idle, rather
// than slowing it down. The goroutine must never unlock: when
// it ends, Go ends the thread with it, and the lowered priority goes too.
func backgroundThread() {
	runtime.LockOSThread()
	// Best effort: a container may forbid it, and the decoding is still right without it.
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), backgroundNice)
}

// backgroundNice is the decode-and-detect thread's nice value: Linux gives a thread at nice 10 about a
// tenth of the time of one at 0 when both want a core, and all of a core no one else wants.
const backgroundNice = 10
