package harness

import (
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// SVG charts (-svg DIR): one file per scenario, SCENARIO.svg, with one panel
// per headline metric of the scenario (req/s, server CPU s/Mreq, p99, KiB
// per connection, heartbeat CPU cores, PING RTT p99) and in each panel one
// bar per side (its median over reps, the value written above the bar), each
// panel on its own scale from zero, with tcppro's ratios to the other sides
// under it. Plain SVG built with encoding/xml: no script, no external
// resource.

var sideColors = map[string]string{
	kindRaw: "#7f7f7f", kindTcppro: "#1f77b4", kindTcpproNetConn: "#9ecae1", kindGrpc: "#2ca02c", kindGnet: "#ff7f0e",
}

type svgDoc struct {
	XMLName xml.Name `xml:"svg"`
	Xmlns   string   `xml:"xmlns,attr"`
	Width   int      `xml:"width,attr"`
	Height  int      `xml:"height,attr"`
	ViewBox string   `xml:"viewBox,attr"`
	Font    string   `xml:"font-family,attr"`
	Elems   []any
}

type svgRect struct {
	XMLName xml.Name `xml:"rect"`
	X       float64  `xml:"x,attr"`
	Y       float64  `xml:"y,attr"`
	W       float64  `xml:"width,attr"`
	H       float64  `xml:"height,attr"`
	Fill    string   `xml:"fill,attr"`
	Stroke  string   `xml:"stroke,attr,omitempty"`
	Title   string   `xml:"title,omitempty"` // tooltip
}

type svgText struct {
	XMLName xml.Name `xml:"text"`
	X       float64  `xml:"x,attr"`
	Y       float64  `xml:"y,attr"`
	Anchor  string   `xml:"text-anchor,attr,omitempty"`
	Size    int      `xml:"font-size,attr"`
	Weight  string   `xml:"font-weight,attr,omitempty"`
	Fill    string   `xml:"fill,attr,omitempty"`
	Text    string   `xml:",chardata"`
}

type svgLine struct {
	XMLName xml.Name `xml:"line"`
	X1      float64  `xml:"x1,attr"`
	Y1      float64  `xml:"y1,attr"`
	X2      float64  `xml:"x2,attr"`
	Y2      float64  `xml:"y2,attr"`
	Stroke  string   `xml:"stroke,attr"`
}

// higherIsBetter tells a panel's reading direction.
func higherIsBetter(metric string) bool {
	return metric == "req/s" || metric == "calls/s"
}

// WriteSVGs writes one chart per scenario that has headline rows into dir
// and returns the files written.
func (r *Report) WriteSVGs(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, sc := range r.scenarios {
		var rows []Row
		for _, row := range r.Rows {
			if row.Scenario == sc.name && row.Headline {
				rows = append(rows, row)
			}
		}
		if len(rows) == 0 {
			continue
		}
		b, err := xml.MarshalIndent(r.chart(sc, rows), "", " ")
		if err != nil {
			return files, err
		}
		path := filepath.Join(dir, sc.name+".svg")
		if err := os.WriteFile(path, append([]byte(xml.Header), append(b, '\n')...), 0o644); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}

func (r *Report) chart(sc scenario, rows []Row) svgDoc {
	const (
		panelW, panelH = 300.0, 300.0
		top, plotTop   = 60.0, 40.0 // scenario title; metric title within a panel
		plotH          = 180.0
		margin         = 20.0
	)
	// At least wide enough for the scenario's title on one line.
	width := int(max(margin*2+panelW*float64(len(rows)), 40+7.5*float64(len(sc.name+sc.title))))
	height := int(top + panelH + 40)
	doc := svgDoc{Xmlns: "http://www.w3.org/2000/svg", Width: width, Height: height,
		ViewBox: fmt.Sprintf("0 0 %d %d", width, height), Font: "sans-serif"}
	add := func(e any) { doc.Elems = append(doc.Elems, e) }
	add(svgRect{X: 0, Y: 0, W: float64(width), H: float64(height), Fill: "#ffffff"})
	add(svgText{X: margin, Y: 24, Size: 16, Weight: "bold", Text: sc.name + " — " + sc.title})
	reps := fmt.Sprintf("median over %d rep(s); %s", r.Config.Reps, r.Started.Format("2006-01-02 15:04"))
	add(svgText{X: margin, Y: 44, Size: 11, Fill: "#555555", Text: reps})
	for i, row := range rows {
		x0 := margin + panelW*float64(i)
		dir := "lower is better"
		if higherIsBetter(row.Metric) {
			dir = "higher is better"
		}
		add(svgText{X: x0 + panelW/2, Y: top + 14, Anchor: "middle", Size: 12, Weight: "bold", Text: row.Metric})
		add(svgText{X: x0 + panelW/2, Y: top + 28, Anchor: "middle", Size: 10, Fill: "#555555", Text: dir})
		maxV := 0.0
		for _, k := range sc.sides {
			if len(row.Reps[k]) > 0 {
				maxV = max(maxV, row.Values[k])
			}
		}
		base := top + plotTop + plotH
		add(svgLine{X1: x0 + 10, Y1: base, X2: x0 + panelW - 10, Y2: base, Stroke: "#333333"})
		slot := (panelW - 20) / float64(len(sc.sides))
		for j, k := range sc.sides {
			cx := x0 + 10 + slot*(float64(j)+0.5)
			bw := slot * 0.6
			add(svgText{X: cx, Y: base + 16, Anchor: "middle", Size: 11, Text: k})
			if len(row.Reps[k]) == 0 {
				add(svgText{X: cx, Y: base - 4, Anchor: "middle", Size: 10, Fill: "#999999", Text: "n/a"})
				continue
			}
			v := row.Values[k]
			h := 0.0
			if maxV > 0 && v > 0 {
				h = math.Round(v/maxV*plotH*10) / 10
			}
			label := fmt.Sprintf(row.format, v)
			add(svgRect{X: cx - bw/2, Y: base - h, W: bw, H: h, Fill: sideColors[k],
				Title: fmt.Sprintf("%s %s: %s (reps: %s)", k, row.Metric, label, list(row.format, row.Reps[k]))})
			add(svgText{X: cx, Y: base - h - 4, Anchor: "middle", Size: 10, Text: label})
		}
		var ratios []string
		for _, k := range ratioOrder(sc.sides) {
			if v, ok := row.Ratios[ratioKey(k)]; ok && v != 0 && !math.IsInf(v, 0) {
				ratios = append(ratios, fmt.Sprintf("%s %.2fx", ratioKey(k), v))
			}
		}
		if len(ratios) > 0 {
			add(svgText{X: x0 + panelW/2, Y: base + 36, Anchor: "middle", Size: 10, Fill: "#333333", Text: strings.Join(ratios, "  ")})
		}
		if row.Target != "" {
			add(svgText{X: x0 + panelW/2, Y: base + 52, Anchor: "middle", Size: 10, Fill: "#333333",
				Text: fmt.Sprintf("target %s: %s", row.Target, map[string]string{"": "n/a"}[row.Result]+row.Result)})
		}
	}
	return doc
}
