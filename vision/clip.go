package vision

import (
	"errors"
	"fmt"
	"io"
)

// ReadClip reads the first n frames of a video file (fewer when it is shorter), and each as
// the JPEG at the given quality that a bridge would send: the inputs of the ward benchmarks.
func ReadClip(path string, n, quality int) ([]Frame, [][]byte, error) {
	v, err := OpenVideo(path)
	if err != nil {
		return nil, nil, err
	}
	defer v.Close()
	var frames []Frame
	var jpegs [][]byte
	for len(frames) < n {
		f, err := v.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		data, err := EncodeJPEG(f, quality)
		if err != nil {
			return nil, nil, err
		}
		frames, jpegs = append(frames, f), append(jpegs, data)
	}
	if len(frames) == 0 {
		return nil, nil, fmt.Errorf("vision: %s has no frames", path)
	}
	return frames, jpegs, nil
}
