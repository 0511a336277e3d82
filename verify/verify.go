package verify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/netx"
)

// Scenario is one fault and the bound tcppro must meet under it.
type Scenario struct {
	Name        string
	Description string
	// Bound is the scenario's headline bound (what the table's bound column
	// shows); some scenarios compute a tighter one while they run.
	Bound time.Duration
	// Needs names the programs besides tcppro the scenario runs ("etcd",
	// "dnsmasq"); where one is missing the row is skipped and says how to
	// install it.
	Needs []string
	// Run builds the scenario's lab, produces the fault and measures. An
	// error means the scenario could not run (its row fails with the
	// error); a measurement outside the bound is a Result with Pass false.
	Run func(ctx context.Context, env *Env) (Result, error)
}

// Result is one row of the report.
type Result struct {
	Scenario string `json:"scenario"`
	// BoundMS is the bound measured_ms is held to, in milliseconds.
	BoundMS float64 `json:"bound_ms"`
	// MeasuredMS is what was measured (Metric says what), in milliseconds.
	MeasuredMS float64 `json:"measured_ms"`
	// BaselineMS is the same situation with a plain net.Conn on the
	// kernel's defaults, or -1 where no baseline applies. When
	// BaselineCapped is true the plain connection had noticed nothing when
	// the cap ran out and BaselineMS is the cap: the real figure is larger.
	BaselineMS     float64 `json:"baseline_ms"`
	BaselineCapped bool    `json:"baseline_capped,omitempty"`
	Pass           bool    `json:"pass"`

	// Metric says what MeasuredMS measures.
	Metric string `json:"metric,omitempty"`
	// Bound, Measured and Baseline are the table's cells when a number of
	// milliseconds alone would not say it ("0 hung, resumed ≤ 1.70 s").
	Bound    string `json:"bound,omitempty"`
	Measured string `json:"measured,omitempty"`
	Baseline string `json:"baseline,omitempty"`
	// Detail explains the measurement, one finding per line: what each
	// side saw, the baseline's settings, and why the row failed.
	Detail string `json:"detail,omitempty"`
	// Error is set when the scenario could not run.
	Error string `json:"error,omitempty"`
	// Skipped says why the scenario did not run: a program it needs is
	// missing here (Scenario.Needs). A skipped row neither passes nor
	// fails.
	Skipped string `json:"skipped,omitempty"`
	// DurationMS is how long the scenario took to run.
	DurationMS float64 `json:"duration_ms"`
	// TLS reports a run over TLS (Options.TLS).
	TLS bool `json:"tls,omitempty"`
}

// DefaultBaselineCap is how long a plain connection is watched before the
// baseline is reported as "> cap".
const DefaultBaselineCap = 60 * time.Second

// AgentArgs are the arguments that make the tcppro program run the client
// agent (see AgentMain): Options.Command is called with them.
var AgentArgs = []string{"verify", "__agent"}

// Options configure a run.
type Options struct {
	// BaselineCap bounds how long a plain connection is watched; it is
	// reported as "> cap" when it noticed nothing. Default 60 s.
	BaselineCap time.Duration

	// Progress receives one line when each scenario starts and one when it
	// ends. Nil: none.
	Progress io.Writer

	// Command returns the command that runs the tcppro program with args
	// inside host h (use h.Command): args are either "serve" and its flags
	// (the reference service, methods echo and sleep) or AgentArgs (the
	// client agent). The default runs this program (os.Executable), which
	// must be tcppro, with TCPPRO_* variables removed from its environment
	// so that none changes the flags the scenarios give. Tests run their
	// own test binary (see the helper-process pattern in the package's
	// tests).
	Command func(ctx context.Context, h *faultnet.Host, args ...string) *exec.Cmd

	// Parallel runs the scenarios of RunAll at the same time, each in its
	// own lab. Default false: one after the other.
	Parallel bool

	// TLS, if set, runs every scenario over TLS: the servers (processes
	// and in-process) serve TLS with TLS.Cert and TLS.Key, the agents'
	// clients and the raw peers trust TLS.CA for TLSServerName, and the raw
	// servers speak TLS too. Default nil: plain TCP. See NewTLSFiles.
	TLS *TLSFiles
}

func (o Options) withDefaults() Options {
	if o.BaselineCap <= 0 {
		o.BaselineCap = DefaultBaselineCap
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Command == nil {
		o.Command = SelfCommand
	}
	return o
}

// SelfCommand runs this program (os.Executable) with args inside h,
// without the TCPPRO_* environment variables.
func SelfCommand(ctx context.Context, h *faultnet.Host, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		cmd := h.Command(ctx, "tcppro", args...)
		cmd.Err = fmt.Errorf("verify: finding this program: %w", err)
		return cmd
	}
	cmd := h.Command(ctx, exe, args...)
	cmd.Env = CleanEnv(os.Environ())
	return cmd
}

// CleanEnv returns env without the TCPPRO_* variables, which tcppro's
// subcommands read as flag values, except TCPPRO_TRANSPORT_AUTO (netx's
// TransportEnv): the transport a run asks for reaches its servers and
// clients too.
func CleanEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TCPPRO_") || strings.HasPrefix(kv, netx.TransportEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Env is what a running scenario gets: its options and everything it
// starts (labs, processes, in-process servers), all of it stopped and
// removed when the scenario ends.
type Env struct {
	ctx  context.Context
	opts Options
	name string

	mu       sync.Mutex
	cleanups []func()
	procs    []*proc     // every process started, checked for race and panic reports
	srvTLS   *tls.Config // loaded from opts.TLS on first use
	cliTLS   *tls.Config
}

// BaselineCap is how long a plain connection is watched.
func (e *Env) BaselineCap() time.Duration { return e.opts.BaselineCap }

// logf writes a progress line about the scenario.
func (e *Env) logf(format string, args ...any) {
	fmt.Fprintf(e.opts.Progress, "verify: %s: %s\n", e.name, fmt.Sprintf(format, args...))
}

// onClose registers fn to run when the scenario ends, last registered first.
func (e *Env) onClose(fn func()) {
	e.mu.Lock()
	e.cleanups = append(e.cleanups, fn)
	e.mu.Unlock()
}

func (e *Env) close() {
	e.mu.Lock()
	fns := e.cleanups
	e.cleanups = nil
	e.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// newLab returns a lab closed when the scenario ends or the run's context
// is cancelled.
func (e *Env) newLab() (*faultnet.Lab, error) {
	lab, err := faultnet.New(e.ctx)
	if err != nil {
		return nil, err
	}
	e.onClose(func() {
		if err := lab.Close(); err != nil {
			e.logf("closing the lab: %v", err)
		}
	})
	return lab, nil
}

// Check reports whether the scenarios can run here: the error matches
// faultnet.ErrUnsupported (errors.Is) and says why when they cannot.
func Check(ctx context.Context) error {
	lab, err := faultnet.New(ctx)
	if err != nil {
		return err
	}
	return lab.Close()
}

// Run runs one scenario and returns its row. The error is non-nil only
// when the lab cannot run here (it matches faultnet.ErrUnsupported) or ctx
// was cancelled; a scenario that fails is a Result with Pass false.
func Run(ctx context.Context, s Scenario, opts Options) (Result, error) {
	opts = opts.withDefaults()
	env := &Env{ctx: ctx, opts: opts, name: s.Name}
	for _, n := range s.Needs {
		if _, err := findProgram(n); err != nil {
			fmt.Fprintf(opts.Progress, "verify: %s: skipped: %v\n", s.Name, err)
			return Result{Scenario: s.Name, BoundMS: ms(s.Bound), BaselineMS: -1, TLS: opts.TLS != nil, Skipped: err.Error()}, nil
		}
	}
	fmt.Fprintf(opts.Progress, "verify: %s: start (%s): %s\n", s.Name, env.transport(), s.Description)
	start := time.Now()
	r, err := runProtected(ctx, s, env)
	env.close()
	// A child that reported a data race or a panic fails the row: the
	// client library runs in the agents, and in tests they are -race
	// builds.
	for _, p := range env.procs {
		if rep := p.stderr.problem(); rep != "" {
			r.Pass = false
			if len(rep) > 2000 {
				rep = rep[:2000] + "..."
			}
			r.Detail = strings.TrimSpace(r.Detail + fmt.Sprintf("\n%s reported: %s", p.name, rep))
		}
	}
	r.Scenario = s.Name
	r.TLS = opts.TLS != nil
	r.DurationMS = ms(time.Since(start))
	if err != nil {
		if errors.Is(err, faultnet.ErrUnsupported) {
			return r, err
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", ctx.Err())
		}
		r.Pass = false
		r.Error = err.Error()
		if r.BoundMS == 0 {
			r.BoundMS = ms(s.Bound)
		}
		if r.BaselineMS == 0 && !r.BaselineCapped {
			r.BaselineMS = -1
		}
	}
	verdict := "FAIL"
	switch {
	case ctx.Err() != nil:
		verdict = "interrupted"
	case r.Pass:
		verdict = "pass"
	}
	what := r.Measured
	if what == "" {
		what = fmtMS(r.MeasuredMS)
	}
	if r.Error != "" && ctx.Err() == nil {
		what = "error: " + r.Error
	}
	fmt.Fprintf(opts.Progress, "verify: %s: %s: %s (took %s)\n", s.Name, verdict, what, fmtDur(time.Since(start)))
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	return r, nil
}

// runProtected runs the scenario, turning a panic into an error so that the
// cleanups still run.
func runProtected(ctx context.Context, s Scenario, env *Env) (r Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return s.Run(ctx, env)
}

// RunAll runs the scenarios, in parallel when opts.Parallel is set, and
// returns their rows in the order given. The error is non-nil when the lab
// cannot run here (it matches faultnet.ErrUnsupported) or ctx was
// cancelled; the rows of the scenarios that ran are returned with it.
func RunAll(ctx context.Context, scenarios []Scenario, opts Options) ([]Result, error) {
	if err := Check(ctx); err != nil {
		return nil, err
	}
	results := make([]Result, len(scenarios))
	errs := make([]error, len(scenarios))
	if opts.Parallel {
		var wg sync.WaitGroup
		for i, s := range scenarios {
			wg.Go(func() { results[i], errs[i] = Run(ctx, s, opts) })
		}
		wg.Wait()
	} else {
		for i, s := range scenarios {
			if ctx.Err() != nil {
				results[i] = Result{Scenario: s.Name, BoundMS: ms(s.Bound), BaselineMS: -1, Error: "not run: interrupted"}
				errs[i] = ctx.Err()
				continue
			}
			results[i], errs[i] = Run(ctx, s, opts)
		}
	}
	for _, err := range errs {
		if errors.Is(err, faultnet.ErrUnsupported) {
			return results, err
		}
	}
	return results, ctx.Err()
}

// Lookup returns the scenario with the given name.
func Lookup(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Names lists the scenarios' names in order.
func Names() []string {
	var names []string
	for _, s := range Scenarios() {
		names = append(names, s.Name)
	}
	return names
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
