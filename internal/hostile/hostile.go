// Package hostile makes the malformed inputs that tests and `make hostile` send to Vigil, so
// that each is written once.
package hostile

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/png"
)

// HugePNG is a valid PNG header claiming side x side pixels, with no pixels behind it: a
// decoder that trusts it allocates side*side*4 bytes.
func HugePNG(side uint32) []byte {
	var buf bytes.Buffer
	png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1)))
	data := buf.Bytes()
	binary.BigEndian.PutUint32(data[16:], side)
	binary.BigEndian.PutUint32(data[20:], side)
	binary.BigEndian.PutUint32(data[29:], crc32.ChecksumIEEE(data[12:29]))
	return data
}
