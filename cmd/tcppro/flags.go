package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/tcppro/tcppro/session"
)

// envName is the environment variable that can set flag name.
func envName(name string) string {
	return "TCPPRO_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseFlags parses args into fs, then fills every flag not given on the
// command line from its TCPPRO_<FLAG> environment variable. A malformed
// environment value is an error that names the variable.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.VisitAll(func(f *flag.Flag) {
		f.Usage += fmt.Sprintf(" [$%s]", envName(f.Name))
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %v", envName(f.Name), v, e)
		}
	})
	return err
}

// byteSize is a flag holding a number of bytes, written as an integer with
// an optional binary unit: 65536, 64KiB, 4MiB, 1GiB (KB, MB, GB and K, M, G
// are taken as the same binary units). Values outside [min, max] are
// refused, so the flag's error names it.
type byteSize struct {
	v        *int64
	min, max int64
}

func (b byteSize) String() string {
	if b.v == nil {
		return "0"
	}
	return formatBytes(*b.v)
}

func (b byteSize) Set(s string) error {
	v, err := parseBytes(s)
	if err != nil {
		return err
	}
	if v < b.min || v > b.max {
		return fmt.Errorf("%s is outside [%s, %s]", s, formatBytes(b.min), formatBytes(b.max))
	}
	*b.v = v
	return nil
}

// bytesFlag defines a byteSize flag.
func bytesFlag(fs *flag.FlagSet, name string, def, min, max int64, usage string) *int64 {
	v := def
	fs.Var(byteSize{v: &v, min: min, max: max}, name, usage)
	return &v
}

var byteUnits = []struct {
	names []string
	mult  int64
}{
	{[]string{"GiB", "GB", "G"}, 1 << 30},
	{[]string{"MiB", "MB", "M"}, 1 << 20},
	{[]string{"KiB", "KB", "K"}, 1 << 10},
	{[]string{"B"}, 1},
}

func parseBytes(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
unit:
	for _, u := range byteUnits {
		for _, n := range u.names {
			if rest, ok := strings.CutSuffix(num, n); ok {
				num, mult = strings.TrimSpace(rest), u.mult
				break unit
			}
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number of bytes (65536, 64KiB, 4MiB, 1GiB)", s)
	}
	if v > math.MaxInt64/mult || v < math.MinInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v * mult, nil
}

func formatBytes(v int64) string {
	for _, u := range byteUnits[:3] {
		if v != 0 && v%u.mult == 0 {
			return fmt.Sprintf("%d%s", v/u.mult, u.names[0])
		}
	}
	return strconv.FormatInt(v, 10)
}

// flagError rewrites a configuration error (*session.ConfigError, which
// names a Config field) in terms of the command's flags: fields maps the
// field names to flag names. Other errors are returned as they are.
func flagError(err error, fields map[string]string) error {
	var ce *session.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	name, ok := fields[ce.Field]
	if !ok {
		return err
	}
	// Field names in the reason ("must exceed HeartbeatInterval") become
	// flags too, the longest first (MaxConnAgeJitter before MaxConnAge).
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	reason := ce.Reason
	for _, f := range names {
		reason = strings.ReplaceAll(reason, f, "\x00"+fields[f])
	}
	reason = strings.ReplaceAll(reason, "\x00", "--")
	v := fmt.Sprint(ce.Value)
	if strings.HasSuffix(ce.Field, "Size") || strings.HasSuffix(ce.Field, "Memory") || strings.HasSuffix(ce.Field, "Budget") {
		switch n := ce.Value.(type) {
		case uint32:
			v = formatBytes(int64(n))
		case int:
			v = formatBytes(int64(n))
		case int64:
			v = formatBytes(n)
		}
	}
	return fmt.Errorf("--%s=%s: %s", name, v, reason)
}
