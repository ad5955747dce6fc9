// Package dicomio reads DICOM in (frames, calibration, identifiers) and writes DICOM out: the
// structured reports of decided findings.
package dicomio

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"sort"
	"strings"
)

// Tag is a DICOM (group, element) pair.
type Tag struct{ Group, Element uint16 }

func (t Tag) String() string { return fmt.Sprintf("(%04X,%04X)", t.Group, t.Element) }

func (t Tag) less(u Tag) bool {
	return t.Group < u.Group || t.Group == u.Group && t.Element < u.Element
}

// element is one data element to write: a tag, its VR, and a value that is a string, a
// []string (multi-valued), []float32 (FL), []byte (OB), uint32 (UL), or []dataset (SQ).
type element struct {
	tag   Tag
	vr    string
	value any
}

// dataset is a set of elements; it is written in tag order.
type dataset []element

func (d *dataset) add(group, elem uint16, vr string, value any) {
	*d = append(*d, element{Tag{group, elem}, vr, value})
}

// longVRs have a 4-byte length in Explicit VR Little Endian.
var longVRs = map[string]bool{"OB": true, "OD": true, "OF": true, "OL": true, "OV": true, "OW": true,
	"SQ": true, "SV": true, "UC": true, "UN": true, "UR": true, "UT": true, "UV": true}

// encode writes the dataset in Explicit VR Little Endian, sorted by tag, with every sequence
// and item of defined length.
func (d dataset) encode() ([]byte, error) {
	sorted := append(dataset(nil), d...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].tag.less(sorted[j].tag) })
	var buf bytes.Buffer
	for i, e := range sorted {
		if i > 0 && sorted[i-1].tag == e.tag {
			return nil, fmt.Errorf("dicomio: element %s appears twice", e.tag)
		}
		value, err := e.bytes()
		if err != nil {
			return nil, fmt.Errorf("dicomio: element %s: %w", e.tag, err)
		}
		binary.Write(&buf, binary.LittleEndian, e.tag.Group)
		binary.Write(&buf, binary.LittleEndian, e.tag.Element)
		buf.WriteString(e.vr)
		if longVRs[e.vr] {
			buf.Write([]byte{0, 0})
			binary.Write(&buf, binary.LittleEndian, uint32(len(value)))
		} else {
			if len(value) > math.MaxUint16 {
				return nil, fmt.Errorf("dicomio: element %s: %d bytes is too long for VR %s", e.tag, len(value), e.vr)
			}
			binary.Write(&buf, binary.LittleEndian, uint16(len(value)))
		}
		buf.Write(value)
	}
	return buf.Bytes(), nil
}

// bytes is the element's value, padded to an even length as its VR requires.
func (e element) bytes() ([]byte, error) {
	switch v := e.value.(type) {
	case string:
		return pad(e.vr, []byte(v)), nil
	case []string:
		return pad(e.vr, []byte(strings.Join(v, `\`))), nil
	case []float32:
		var b bytes.Buffer
		for _, f := range v {
			binary.Write(&b, binary.LittleEndian, f)
		}
		return b.Bytes(), nil
	case []byte:
		return pad(e.vr, v), nil
	case uint32:
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, v)
		return b, nil
	case []dataset:
		var b bytes.Buffer
		for _, item := range v {
			content, err := item.encode()
			if err != nil {
				return nil, err
			}
			binary.Write(&b, binary.LittleEndian, uint16(0xFFFE))
			binary.Write(&b, binary.LittleEndian, uint16(0xE000))
			binary.Write(&b, binary.LittleEndian, uint32(len(content)))
			b.Write(content)
		}
		return b.Bytes(), nil
	}
	return nil, fmt.Errorf("unsupported value %T", e.value)
}

func pad(vr string, b []byte) []byte {
	if len(b)%2 == 0 {
		return b
	}
	if vr == "UI" || vr == "OB" || vr == "UN" {
		return append(b, 0)
	}
	return append(b, ' ')
}

// Part 10 constants.
const (
	explicitVRLittleEndian = "1.2.840.10008.1.2.1"
	// ImplementationClassUID identifies Vigil's DICOM writer (a UUID-derived UID under 2.25).
	ImplementationClassUID = "2.25.263396544305286046138880513567853870101"
	implementationVersion  = "VIGIL_1"
)

// part10 wraps a dataset as a DICOM file: preamble, DICM, file meta, then the dataset.
func part10(sopClass, sopInstance string, body dataset) ([]byte, error) {
	var meta dataset
	meta.add(0x0002, 0x0001, "OB", []byte{0, 1})
	meta.add(0x0002, 0x0002, "UI", sopClass)
	meta.add(0x0002, 0x0003, "UI", sopInstance)
	meta.add(0x0002, 0x0010, "UI", explicitVRLittleEndian)
	meta.add(0x0002, 0x0012, "UI", ImplementationClassUID)
	meta.add(0x0002, 0x0013, "SH", implementationVersion)
	metaBytes, err := meta.encode()
	if err != nil {
		return nil, err
	}
	var group dataset
	group.add(0x0002, 0x0000, "UL", uint32(len(metaBytes)))
	groupBytes, err := group.encode()
	if err != nil {
		return nil, err
	}
	bodyBytes, err := body.encode()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 128, 128+4+len(groupBytes)+len(metaBytes)+len(bodyBytes))
	out = append(out, "DICM"...)
	out = append(out, groupBytes...)
	out = append(out, metaBytes...)
	return append(out, bodyBytes...), nil
}

var uidPattern = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)

// ValidUID says whether s is a DICOM UID: digits and dots, at most 64 characters.
func ValidUID(s string) bool { return len(s) <= 64 && uidPattern.MatchString(s) }

// NewUID returns a fresh UID under 2.25 (a random UUID as a decimal number), which needs no
// registered root.
func NewUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant
	return "2.25." + new(big.Int).SetBytes(b).String()
}
