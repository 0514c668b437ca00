package envflag

import (
	"testing"

	"github.com/spf13/pflag"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, "d"},
		{"env", nil, map[string]string{"SANDKEEP_S3_BUCKET": "e"}, "e"},
		{"flag wins", []string{"--s3-bucket=f"}, map[string]string{"SANDKEEP_S3_BUCKET": "e"}, "f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			b := fs.String("s3-bucket", "d", "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if err := Apply(fs); err != nil {
				t.Fatal(err)
			}
			if *b != tt.want {
				t.Fatalf("got %q, want %q", *b, tt.want)
			}
		})
	}
}

func TestApplyBadValue(t *testing.T) {
	t.Setenv("SANDKEEP_N", "notanumber")
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Int("n", 1, "")
	if err := Apply(fs, "n"); err == nil {
		t.Fatal("want an error for a non-numeric value")
	}
	if err := Apply(fs, "missing"); err == nil {
		t.Fatal("want an error for an unknown flag")
	}
}
