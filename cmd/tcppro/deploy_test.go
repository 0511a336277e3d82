package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/refservice"
	"github.com/tcppro/tcppro/server"
)

// TestDeployReferences reads every file under deploy/ and checks that what
// they name exists in this binary: tcppro subcommands and their flags
// (and TCPPRO_* variables), ports (the documented defaults only), admin
// HTTP paths (asked of the admin plane's handler, with their method) and
// metric names and labels (gathered from the admin registry after a call,
// with a client collector). A file that names something missing fails it.
func TestDeployReferences(t *testing.T) {
	k := knownNames(t)
	refs := collectDeployRefs(t, filepath.Join("..", "..", "deploy"))
	seen := map[string]bool{}
	errorf := func(format string, args ...any) { // each problem once
		if msg := fmt.Sprintf(format, args...); !seen[msg] {
			seen[msg] = true
			t.Error(msg)
		}
	}
	if len(refs.flags) == 0 || len(refs.ports) == 0 || len(refs.paths) == 0 || len(refs.metrics) == 0 || len(refs.envs) == 0 {
		t.Fatalf("deploy/ references too little to be checked (flags %d, ports %d, paths %d, metrics %d, env %d): is the parser broken?",
			len(refs.flags), len(refs.ports), len(refs.paths), len(refs.metrics), len(refs.envs))
	}
	for _, p := range refs.problems {
		errorf("%s", p)
	}
	for _, f := range refs.flags {
		fl, ok := k.flags[f.sub]
		if !ok {
			errorf("%s: `tcppro %s`: no such subcommand", f.file, f.sub)
			continue
		}
		if _, ok := fl[f.name]; !ok {
			errorf("%s: `tcppro %s --%s`: no such flag", f.file, f.sub, f.name)
		}
	}
	for _, e := range refs.envs {
		subs := []string{e.sub}
		if e.sub == "" {
			subs = []string{"serve", "call"}
		}
		found := false
		for _, sub := range subs {
			for name := range k.flags[sub] {
				found = found || envName(name) == e.name
			}
		}
		if !found {
			errorf("%s: %s is the variable of no flag of tcppro %s", e.file, e.name, strings.Join(subs, " or "))
		}
	}
	for _, p := range refs.ports {
		if !k.ports[p.port] {
			errorf("%s: port %d (%s) is not a documented default port (%v)", p.file, p.port, p.what, k.ports)
		}
	}
	for _, p := range refs.paths {
		if msg := k.route(p.method, p.path); msg != "" {
			errorf("%s: %s %s: %s", p.file, p.method, p.path, msg)
		}
	}
	for _, m := range refs.metrics {
		labels, ok := k.metric(m.name)
		if !ok {
			errorf("%s: metric %s is not exported by /metrics", m.file, m.name)
			continue
		}
		for _, l := range m.labels {
			if !labels[l] {
				errorf("%s: metric %s has no label %q", m.file, m.name, l)
			}
		}
	}
	for _, l := range refs.groupBy {
		if !k.labels[l.name] {
			errorf("%s: no exported metric has the label %q", l.file, l.name)
		}
	}
	t.Logf("checked %d flags, %d variables, %d ports, %d paths, %d metrics", len(refs.flags), len(refs.envs), len(refs.ports), len(refs.paths), len(refs.metrics))
}

// known is what the binary has.
type known struct {
	flags   map[string]map[string]bool // subcommand → flag → is a bool flag
	ports   map[int]bool
	metrics map[string]map[string]bool // family → its labels (plus instance, job)
	hists   map[string]bool            // histogram families
	labels  map[string]bool            // every label, plus instance, job, le
	handler http.Handler               // the admin plane's
}

// metric returns the labels of a series name: a family, or a histogram's
// _bucket (with le), _sum or _count.
func (k known) metric(name string) (map[string]bool, bool) {
	if l, ok := k.metrics[name]; ok {
		return l, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if ok && k.hists[base] {
			l := k.metrics[base]
			if suf == "_bucket" {
				l = maps1(l, "le")
			}
			return l, true
		}
	}
	return nil, false
}

func maps1(m map[string]bool, add string) map[string]bool {
	c := map[string]bool{add: true}
	for k := range m {
		c[k] = true
	}
	return c
}

// route asks the admin handler for method path and says what is wrong.
func (k known) route(method, target string) string {
	req := httptest.NewRequest(method, target, nil)
	rec := httptest.NewRecorder()
	k.handler.ServeHTTP(rec, req)
	switch rec.Code {
	case http.StatusNotFound:
		return "no such admin path"
	case http.StatusMethodNotAllowed:
		return "method not allowed (Allow: " + rec.Header().Get("Allow") + ")"
	case http.StatusBadRequest:
		return "bad request: " + strings.TrimSpace(rec.Body.String())
	}
	return ""
}

// knownNames builds the flag sets (from each subcommand's -h listing),
// the default ports, and an admin plane over a server that answered a
// call, whose registry also holds a client collector.
func knownNames(t *testing.T) known {
	t.Helper()
	k := known{flags: map[string]map[string]bool{}, ports: map[int]bool{}, metrics: map[string]map[string]bool{},
		hists: map[string]bool{}, labels: map[string]bool{"instance": true, "job": true, "le": true}}
	for name := range commands {
		k.flags[name] = subcommandFlags(t, name)
	}
	for _, a := range []string{defaultListen, admin.DefaultAddr} {
		_, p, _ := net.SplitHostPort(a)
		n, _ := strconv.Atoi(p)
		k.ports[n] = true
	}

	m := admin.NewMetrics(nil)
	cfg := server.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	m.Install(&cfg)
	srv, err := server.New(cfg, refservice.Handler())
	if err != nil {
		t.Fatal(err)
	}
	adm, err := admin.New(admin.Config{Metrics: m, Logger: cfg.Logger}, srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.Close() })
	k.handler = adm.Handler()
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	c, err := client.New(client.Config{Addrs: []string{ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	m.Registry().MustRegister(admin.ClientCollector(c))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	srv.Shutdown(ctx)
	<-served
	for _, f := range fams {
		labels := map[string]bool{"instance": true, "job": true}
		for _, mt := range f.GetMetric() {
			for _, lp := range mt.GetLabel() {
				labels[lp.GetName()] = true
				k.labels[lp.GetName()] = true
			}
		}
		k.metrics[f.GetName()] = labels
		if f.GetType().String() == "HISTOGRAM" {
			k.hists[f.GetName()] = true
		}
	}
	return k
}

// subcommandFlags lists a subcommand's flags from its -h output (the
// flag package's listing: "  -name" for a bool flag, "  -name type" else).
func subcommandFlags(t *testing.T, sub string) map[string]bool {
	t.Helper()
	out, _ := tcppro(sub, "-h").CombinedOutput()
	flags := map[string]bool{}
	re := regexp.MustCompile(`^  -([a-zA-Z0-9][a-zA-Z0-9-]*)( \S+)?$`)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = m[2] == ""
		}
	}
	if len(flags) == 0 {
		t.Fatalf("tcppro %s -h listed no flags:\n%s", sub, out)
	}
	return flags
}

// deployRefs is what deploy/ names.
type deployRefs struct {
	flags []struct{ file, sub, name string }
	envs  []struct{ file, sub, name string }
	ports []struct {
		file string
		port int
		what string
	}
	paths   []struct{ file, method, path string }
	metrics []struct {
		file, name string
		labels     []string
	}
	groupBy  []struct{ file, name string }
	targets  []struct{ file, name string } // Services' targetPort names
	problems []string
	names    map[string]int // container port names → ports
}

var (
	reEnv    = regexp.MustCompile(`\bTCPPRO_[A-Z0-9_]+\b`)
	reURL    = regexp.MustCompile(`https?://[^/\s"':]+:(\d+)(/[^\s"'?;]*(?:\?[^\s"';]*)?)?`)
	reMetric = regexp.MustCompile(`\b((?:tcppro|go|process)_[a-z0-9_]+)\s*(\{[^}]*\})?`)
	reLabel  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	reBy     = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	rePort   = regexp.MustCompile(`:(\d{1,5})$`)
)

func collectDeployRefs(t *testing.T, root string) *deployRefs {
	t.Helper()
	r := &deployRefs{names: map[string]int{}}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, p)
		name = filepath.Join("deploy", name)
		r.text(name, string(b))
		switch filepath.Ext(p) {
		case ".yaml", ".yml":
			r.yamlFile(name, b)
		case ".json":
			r.jsonFile(name, b)
		case ".service", ".socket":
			r.unitFile(name, string(b))
		default:
			r.problems = append(r.problems, name+": a file of a kind this test cannot check: teach it")
		}
	}
	for _, tp := range r.targets {
		if _, ok := r.names[tp.name]; !ok {
			r.problems = append(r.problems, fmt.Sprintf("%s: targetPort %q names no container port", tp.file, tp.name))
		}
	}
	return r
}

func (r *deployRefs) port(file string, port int, what string) {
	r.ports = append(r.ports, struct {
		file string
		port int
		what string
	}{file, port, what})
}

func (r *deployRefs) path(file, method, p string) {
	r.paths = append(r.paths, struct{ file, method, path string }{file, method, p})
}

// text finds what any file can name: TCPPRO_* variables, admin URLs and
// metric names (with the labels of their selectors).
func (r *deployRefs) text(file, s string) {
	for _, e := range reEnv.FindAllString(s, -1) {
		r.envs = append(r.envs, struct{ file, sub, name string }{file, "", e})
	}
	if ext := filepath.Ext(file); ext != ".yaml" && ext != ".yml" {
		for line := range strings.Lines(s) {
			r.urls(file, line)
		}
	}
	for _, m := range reMetric.FindAllStringSubmatch(s, -1) {
		var labels []string
		for _, l := range reLabel.FindAllStringSubmatch(m[2], -1) {
			labels = append(labels, l[1])
		}
		r.metrics = append(r.metrics, struct {
			file, name string
			labels     []string
		}{file, m[1], labels})
	}
}

// urls records the admin URLs in one command (a line, or a YAML string):
// their ports, and their paths with the method (POST when the command
// says POST).
func (r *deployRefs) urls(file, cmd string) {
	for _, m := range reURL.FindAllStringSubmatch(cmd, -1) {
		n, _ := strconv.Atoi(m[1])
		r.port(file, n, m[0])
		if m[2] != "" {
			method := "GET"
			if strings.Contains(cmd, "POST") {
				method = "POST"
			}
			r.path(file, method, m[2])
		}
	}
}

// jsonFile checks that the file is JSON and that the labels it groups by
// exist.
func (r *deployRefs) jsonFile(file string, b []byte) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		r.problems = append(r.problems, fmt.Sprintf("%s: %v", file, err))
		return
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				for _, m := range reBy.FindAllStringSubmatch(e, -1) {
					for l := range strings.SplitSeq(m[1], ",") {
						if l = strings.TrimSpace(l); l != "" {
							r.groupBy = append(r.groupBy, struct{ file, name string }{file, l})
						}
					}
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
}

// command records the tcppro invocations in a command line (a list of
// words; shell words are split further): `tcppro SUB --flag[=value]...`.
func (r *deployRefs) command(file string, words []string) (sub string) {
	var toks []string
	for _, w := range words {
		toks = append(toks, strings.Fields(strings.NewReplacer(";", " ; ", "&&", " && ", "|", " | ").Replace(w))...)
	}
	for i := 0; i < len(toks); i++ {
		if path.Base(toks[i]) != "tcppro" || i+1 >= len(toks) {
			continue
		}
		sub = toks[i+1]
		if _, ok := commands[sub]; !ok {
			r.problems = append(r.problems, fmt.Sprintf("%s: `tcppro %s`: no such subcommand", file, sub))
		}
		for _, tok := range toks[i+2:] {
			if tok == ";" || tok == "&&" || tok == "|" {
				break
			}
			val := tok // a flag's separate value, or an argument
			if strings.HasPrefix(tok, "-") && tok != "-" {
				var name string
				name, val, _ = strings.Cut(strings.TrimLeft(tok, "-"), "=")
				r.flags = append(r.flags, struct{ file, sub, name string }{file, sub, name})
			}
			if m := rePort.FindStringSubmatch(val); m != nil {
				n, _ := strconv.Atoi(m[1])
				r.port(file, n, "tcppro "+sub+" "+tok)
			}
		}
	}
	return sub
}

// unitFile reads a systemd unit: Exec*= command lines (with continuation
// lines) and Environment= assignments.
func (r *deployRefs) unitFile(file, s string) {
	s = strings.ReplaceAll(s, "\\\n", " ")
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		key, val, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(key, "Exec") {
			r.command(file, strings.Fields(val))
		}
	}
}

// yamlFile reads Kubernetes manifests: containers (their tcppro
// invocation, TCPPRO_* variables with the subcommand they configure,
// ports, probes), Services' ports and the Prometheus scrape annotations.
func (r *deployRefs) yamlFile(file string, b []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if err != nil {
			if err.Error() != "EOF" {
				r.problems = append(r.problems, fmt.Sprintf("%s: %v", file, err))
			}
			break
		}
		docs = append(docs, doc)
	}
	for _, doc := range docs {
		walkYAML(doc, func(key string, v any) {
			if s, ok := v.(string); ok {
				r.urls(file, s)
			}
			for _, x := range asList(v) {
				if s, ok := x.(string); ok {
					r.urls(file, s)
				}
			}
			switch key {
			case "containers", "initContainers":
				for _, c := range asList(v) {
					r.container(file, asMap(c))
				}
			case "annotations":
				for k, v := range asMap(v) {
					s := fmt.Sprint(v)
					switch k {
					case "prometheus.io/port":
						n, _ := strconv.Atoi(s)
						r.port(file, n, k)
					case "prometheus.io/path":
						r.path(file, "GET", s)
					}
				}
			}
		})
		if doc["kind"] == "Service" {
			spec := asMap(doc["spec"])
			for _, p := range asList(spec["ports"]) {
				pm := asMap(p)
				r.port(file, asInt(pm["port"]), "Service port")
				switch tp := pm["targetPort"].(type) {
				case int:
					r.port(file, tp, "Service targetPort")
				case string:
					r.targets = append(r.targets, struct{ file, name string }{file, tp})
				}
			}
		}
	}
}

func (r *deployRefs) container(file string, c map[string]any) {
	var words []string
	for _, k := range []string{"command", "args"} {
		for _, w := range asList(c[k]) {
			words = append(words, fmt.Sprint(w))
		}
	}
	sub := r.command(file, words)
	for _, e := range asList(c["env"]) {
		em := asMap(e)
		name := fmt.Sprint(em["name"])
		if strings.HasPrefix(name, "TCPPRO_") {
			r.envs = append(r.envs, struct{ file, sub, name string }{file, sub, name})
			if m := rePort.FindStringSubmatch(fmt.Sprint(em["value"])); m != nil {
				n, _ := strconv.Atoi(m[1])
				r.port(file, n, name)
			}
		}
	}
	names := map[string]int{}
	for _, p := range asList(c["ports"]) {
		pm := asMap(p)
		n := asInt(pm["containerPort"])
		r.port(file, n, "containerPort")
		if name, ok := pm["name"].(string); ok {
			names[name] = n
			r.names[name] = n
		}
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
		hg := asMap(asMap(c[probe])["httpGet"])
		if hg == nil {
			continue
		}
		r.path(file, "GET", fmt.Sprint(hg["path"]))
		switch p := hg["port"].(type) {
		case int:
			r.port(file, p, probe)
		case string:
			n, ok := names[p]
			if !ok {
				r.problems = append(r.problems, fmt.Sprintf("%s: %s port %q names no port of its container", file, probe, p))
			}
			r.port(file, n, probe)
		}
	}
}

func walkYAML(v any, f func(key string, v any)) {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			f(k, v[k])
			walkYAML(v[k], f)
		}
	case []any:
		for _, x := range v {
			walkYAML(x, f)
		}
	}
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asList(v any) []any         { l, _ := v.([]any); return l }
func asInt(v any) int            { n, _ := v.(int); return n }
