package vision

import (
	"encoding/binary"
	"fmt"
)

// JPEG2000Size reads the image size from a JPEG 2000 codestream's SIZ marker, or from a JP2
// file's codestream box, without decoding anything: so that a frame claiming more pixels
// than its DICOM header is refused before a decoder allocates them.
func JPEG2000Size(data []byte) (width, height int, err error) {
	cs := data
	// A JP2 file: boxes (length, type) until the contiguous codestream box.
	if len(data) >= 12 && string(data[4:8]) == "jP  " {
		cs = nil
		for off := 0; off+8 <= len(data); {
			length := int(binary.BigEndian.Uint32(data[off:]))
			kind := string(data[off+4 : off+8])
			header := 8
			if length == 1 && off+16 <= len(data) {
				length, header = int(binary.BigEndian.Uint64(data[off+8:])), 16
			}
			if length == 0 {
				length = len(data) - off
			}
			if length < header || off+length > len(data) {
				return 0, 0, fmt.Errorf("%w: JP2 box %q of %d bytes overruns the frame", ErrDecode, kind, length)
			}
			if kind == "jp2c" {
				cs = data[off+header : off+length]
				break
			}
			off += length
		}
		if cs == nil {
			return 0, 0, fmt.Errorf("%w: JP2 frame without a codestream", ErrDecode)
		}
	}
	// SOC (FF4F), then SIZ (FF51): Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz.
	if len(cs) < 4+2+2+16 || cs[0] != 0xFF || cs[1] != 0x4F || cs[2] != 0xFF || cs[3] != 0x51 {
		return 0, 0, fmt.Errorf("%w: not a JPEG 2000 codestream (no SOC and SIZ markers)", ErrDecode)
	}
	siz := cs[6:]
	x, y := binary.BigEndian.Uint32(siz[2:]), binary.BigEndian.Uint32(siz[6:])
	ox, oy := binary.BigEndian.Uint32(siz[10:]), binary.BigEndian.Uint32(siz[14:])
	if ox > x || oy > y {
		return 0, 0, fmt.Errorf("%w: JPEG 2000 image offset beyond its size", ErrDecode)
	}
	return int(x - ox), int(y - oy), nil
}
