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

// FlatPNG is a whole PNG of side x side grey pixels, all one value: a few kilobytes that a
// decoder turns into side*side*3 bytes of colour (issue 29.3's frame).
func FlatPNG(side int) []byte {
	var buf bytes.Buffer
	png.Encode(&buf, image.NewGray(image.Rect(0, 0, side, side)))
	return buf.Bytes()
}
