package geom

import (
	"image"
	"math"
	"testing"
)

func TestIoU(t *testing.T) {
	for _, tt := range []struct {
		a, b image.Rectangle
		want float64
	}{
		{image.Rect(0, 0, 10, 10), image.Rect(0, 0, 10, 10), 1},
		{image.Rect(0, 0, 10, 10), image.Rect(5, 0, 15, 10), 50.0 / 150},
		{image.Rect(0, 0, 10, 10), image.Rect(10, 0, 20, 10), 0}, // touching edges share no area
		{image.Rect(0, 0, 10, 10), image.Rect(2, 2, 4, 4), 4.0 / 100},
		{image.Rect(0, 0, 0, 0), image.Rect(0, 0, 10, 10), 0},
	} {
		if got := IoU(tt.a, tt.b); math.Abs(got-tt.want) > 1e-12 || IoU(tt.b, tt.a) != got {
			t.Errorf("IoU(%v, %v) = %v, want %v (and the same both ways)", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestInside(t *testing.T) {
	small, big := image.Rect(2, 2, 4, 4), image.Rect(0, 0, 10, 10)
	if Inside(small, big) != 1 || Inside(big, small) != 0.04 {
		t.Errorf("Inside: small in big %v (want 1), big in small %v (want 0.04)", Inside(small, big), Inside(big, small))
	}
	if got := Inside(image.Rect(0, 0, 10, 10), image.Rect(2, 0, 12, 10)); got != 0.8 {
		t.Errorf("four fifths inside: %v", got)
	}
	if Inside(image.Rectangle{}, big) != 0 || Inside(big, image.Rect(20, 20, 30, 30)) != 0 {
		t.Error("an empty box or boxes apart must give 0")
	}
}

func TestRound(t *testing.T) {
	for _, tt := range []struct {
		x      float64
		places int
		want   float64
	}{
		{1.25, 1, 1.3}, {-1.25, 1, -1.3}, {-1.26, 1, -1.3}, {-0.04, 1, -0}, {12.345, 2, 12.35},
		{-12.345, 2, -12.35}, {0.12345, 3, 0.123}, {7, 0, 7}, {-2.5, 0, -3},
	} {
		if got := Round(tt.x, tt.places); got != tt.want {
			t.Errorf("Round(%v, %d) = %v, want %v", tt.x, tt.places, got, tt.want)
		}
	}
}
