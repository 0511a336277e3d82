package admin_test

import (
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/tcppro/tcppro/client"
)

func TestStatusPage(t *testing.T) {
	e := startEnv(t, envOpts{})
	e.client(client.Config{})
	conns, _ := e.srv.Conns(0, 1)
	r := e.get("/")
	e.expect(r, 200, "text/html")
	if !strings.Contains(r.body, conns[0].Remote) {
		t.Fatalf("the page does not show the connection %s", conns[0].Remote)
	}
	if !strings.Contains(r.body, `id="ready" class="ok">READY`) {
		t.Fatalf("the page does not show readiness")
	}
	// The server renders a row as the page's script does: a cell per
	// heading, the TLS cell empty for a plain connection.
	heads := regexp.MustCompile(`<th[^>]*>([^<]*)</th>`).FindAllStringSubmatch(r.body[strings.Index(r.body, "<thead>"):], -1)
	cells := firstRowCells(t, r.body)
	if len(heads) != len(cells) || heads[len(heads)-2][1] != "TLS" || heads[7][1] != "memory held" {
		t.Fatalf("headings %q, row %q", heads, cells)
	}
	if cells[len(cells)-2] != "" {
		t.Fatalf("TLS cell %q for a plain connection", cells[len(cells)-2])
	}
	for k := range strings.SplitSeq("connections_open requests in_flight overloaded refused_in_flight refused_memory memory_held_bytes control_floods", " ") {
		if !strings.Contains(r.body, `<td id="s-`+k+`">`) {
			t.Fatalf("the page lacks the count %s", k)
		}
	}
	for _, bad := range []string{"http://", "https://", "src=", "<link"} {
		if strings.Contains(r.body, bad) {
			t.Fatalf("the page refers to an external asset (%q)", bad)
		}
	}
	// The Content-Security-Policy admits exactly the inline script and
	// style, by hash.
	csp := r.hdr.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(r.body)
		if m == nil {
			t.Fatalf("no inline %s", tag)
		}
		sum := sha256.Sum256([]byte(m[1]))
		want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want) {
			t.Fatalf("CSP %q lacks %q", csp, want)
		}
	}
	e.srv.SetOffline(true)
	if r := e.get("/"); !strings.Contains(r.body, "NOT READY: offline") {
		t.Fatalf("the page does not show the offline state")
	}
}

// firstRowCells returns the texts of the cells of the first row of the
// page's connection table.
func firstRowCells(t *testing.T, page string) []string {
	t.Helper()
	_, table, ok := strings.Cut(page, `<tbody id="conns">`)
	if table, _, ok = strings.Cut(table, "</tbody>"); !ok {
		t.Fatal("no connection table")
	}
	row, _, ok := strings.Cut(table, "</tr>")
	if !ok {
		t.Fatal("no row in the connection table")
	}
	var cells []string
	for _, m := range regexp.MustCompile(`<td[^>]*>([^<]*)</td>`).FindAllStringSubmatch(row, -1) {
		cells = append(cells, m[1])
	}
	return cells
}
