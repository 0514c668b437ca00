// Package envflag lets command-line flags fall back to SANDKEEP_*
// environment variables: --s3-bucket reads SANDKEEP_S3_BUCKET when the flag
// is not given. An explicit flag always wins over the environment.
package envflag

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Name returns the environment variable of a flag name.
func Name(flag string) string {
	return "SANDKEEP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Apply sets every named flag of fs that was not given on the command line
// from its environment variable, if that is set. With no names it applies
// to every flag of fs.
func Apply(fs *pflag.FlagSet, names ...string) error {
	var err error
	visit := func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		v, ok := os.LookupEnv(Name(f.Name))
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %w", Name(f.Name), v, e)
		}
	}
	if len(names) == 0 {
		fs.VisitAll(visit)
		return err
	}
	for _, n := range names {
		f := fs.Lookup(n)
		if f == nil {
			return fmt.Errorf("envflag: no flag %q", n)
		}
		visit(f)
	}
	return err
}
