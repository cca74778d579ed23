package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"strings"
)

// The plot is drawn by hand with image/png and a 5×7 bitmap font: the
// module takes no plotting dependency, and the harness needs no package
// outside Go to run.

// Series is one bar colour: a path under test.
type Series struct {
	Name  string
	Color color.RGBA
}

// Panel is one chart: groups of bars, one bar per series in each group.
type Panel struct {
	Title  string
	Groups []string
	Values [][]float64 // [group][series]; negative: not measured
}

var glyphs = map[rune]string{
	'A': "01110100011000111111100011000110001", 'B': "11110100011000111110100011000111110",
	'C': "01110100011000010000100001000101110", 'D': "11110100011000110001100011000111110",
	'E': "11111100001000011110100001000011111", 'F': "11111100001000011110100001000010000",
	'G': "01110100011000010111100011000101111", 'H': "10001100011000111111100011000110001",
	'I': "01110001000010000100001000010001110", 'J': "00111000100001000010000101001001100",
	'K': "10001100101010011000101001001010001", 'L': "10000100001000010000100001000011111",
	'M': "10001110111010110101100011000110001", 'N': "10001100011100110101100111000110001",
	'O': "01110100011000110001100011000101110", 'P': "11110100011000111110100001000010000",
	'Q': "01110100011000110001101011001001101", 'R': "11110100011000111110101001001010001",
	'S': "01111100001000001110000010000111110", 'T': "11111001000010000100001000010000100",
	'U': "10001100011000110001100011000101110", 'V': "10001100011000110001100010101000100",
	'W': "10001100011000110101101011010101010", 'X': "10001100010101000100010101000110001",
	'Y': "10001100010101000100001000010000100", 'Z': "11111000010001000100010001000011111",
	'0': "01110100011001110101110011000101110", '1': "00100011000010000100001000010001110",
	'2': "01110100010000100010001000100011111", '3': "11111000100010000010000011000101110",
	'4': "00010001100101010010111110001000010", '5': "11111100001111000001000011000101110",
	'6': "00110010001000011110100011000101110", '7': "11111000010001000100010000100001000",
	'8': "01110100011000101110100011000101110", '9': "01110100011000101111000010001001100",
	'.': "00000000000000000000000000110001100", ',': "00000000000000000000011000010001000",
	'%': "11000110010001000100010001001100011", '/': "00000000010001000100010001000000000",
	'(': "00010001000100001000010000010000010", ')': "01000001000001000010000100010001000",
	'-': "00000000000000011111000000000000000", ':': "00000011000110000000011000110000000",
	'=': "00000000001111100000111110000000000", ' ': "00000000000000000000000000000000000",
}

// Font scales: titles and labels at 2 (10×14 pixels a glyph), bar values
// at 1 when they do not fit a bar at 2.
const scale = 2

type canvas struct{ *image.RGBA }

func (c canvas) rect(x0, y0, x1, y1 int, col color.RGBA) {
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			c.SetRGBA(x, y, col)
		}
	}
}

// text draws s (upper-cased) with its top-left corner at x, y.
func (c canvas) text(x, y int, s string, col color.RGBA) { c.textScaled(x, y, s, col, scale) }

func (c canvas) textScaled(x, y int, s string, col color.RGBA, scale int) {
	for _, r := range strings.ToUpper(s) {
		g, ok := glyphs[r]
		if !ok {
			g = glyphs[' ']
		}
		for i, b := range g {
			if b == '1' {
				px, py := x+(i%5)*scale, y+(i/5)*scale
				c.rect(px, py, px+scale, py+scale, col)
			}
		}
		x += 6 * scale
	}
}

func textWidth(s string) int { return len([]rune(s)) * 6 * scale }

// fmtValue prints a bar's value with three significant digits.
func fmtValue(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// PlotPNG draws the panels side by side under a legend of the series.
func PlotPNG(path, title string, series []Series, panels []Panel) error {
	const (
		pw, h   = 330, 420
		top     = 80 // title and legend
		bottom  = 50 // group labels
		chartH  = h - top - bottom - 40
		margin  = 20
		valueGp = 4
	)
	w := pw * len(panels)
	img := canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	white := color.RGBA{255, 255, 255, 255}
	black := color.RGBA{30, 30, 30, 255}
	grey := color.RGBA{150, 150, 150, 255}
	img.rect(0, 0, w, h, white)
	img.text(margin, 10, title, black)
	lx := margin
	for _, s := range series {
		img.rect(lx, 40, lx+16, 54, s.Color)
		img.text(lx+22, 40, s.Name, black)
		lx += 22 + textWidth(s.Name) + 30
	}
	for pi, p := range panels {
		x0 := pi*pw + margin
		img.text(x0, top, p.Title, black)
		var maxV float64
		for _, g := range p.Values {
			for _, v := range g {
				maxV = max(maxV, v)
			}
		}
		if maxV <= 0 {
			maxV = 1
		}
		baseY := top + 40 + chartH
		img.rect(x0, baseY, x0+pw-2*margin, baseY+2, grey)
		gw := (pw - 2*margin) / max(len(p.Groups), 1)
		bw := (gw - 16) / max(len(series), 1)
		for gi, g := range p.Groups {
			gx := x0 + gi*gw + 8
			for si := range series {
				if gi >= len(p.Values) || si >= len(p.Values[gi]) || p.Values[gi][si] < 0 {
					continue
				}
				v := p.Values[gi][si]
				bh := int(v / maxV * float64(chartH-30))
				bx := gx + si*bw
				img.rect(bx+2, baseY-bh, bx+bw-2, baseY, series[si].Color)
				lbl := fmtValue(v)
				if tw := textWidth(lbl); tw <= bw {
					img.text(bx+(bw-tw)/2, baseY-bh-14-valueGp, lbl, black)
				} else {
					img.textScaled(bx+(bw-tw/2)/2, baseY-bh-7-valueGp, lbl, black, 1)
				}
			}
			img.text(gx+(gw-16-textWidth(g))/2, baseY+12, g, black)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img.RGBA); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
