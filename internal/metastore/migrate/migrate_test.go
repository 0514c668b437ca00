package migrate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name    string
		files   fstest.MapFS
		want    []int
		wantErr string
	}{
		{
			name: "sorted by number, other files ignored",
			files: fstest.MapFS{
				"d/0002_b.sql":  file("B"),
				"d/0001_a.sql":  file("A"),
				"d/0010_x.sql~": file("ignored"),
				"d/README":      file("ignored"),
				"d/0003_c.sql":  file("C"),
			},
			want: []int{1, 2, 3},
		},
		{name: "gap", files: fstest.MapFS{"d/0001_a.sql": file(""), "d/0003_c.sql": file("")}, wantErr: "want number 2"},
		{name: "duplicate", files: fstest.MapFS{"d/0001_a.sql": file(""), "d/0001_b.sql": file("")}, wantErr: "same number"},
		{name: "starts at 2", files: fstest.MapFS{"d/0002_a.sql": file("")}, wantErr: "want number 1"},
		{name: "no number", files: fstest.MapFS{"d/init.sql": file("")}, wantErr: "NNNN_description"},
		{name: "zero", files: fstest.MapFS{"d/0000_init.sql": file("")}, wantErr: "NNNN > 0"},
		{name: "sign", files: fstest.MapFS{"d/+1_init.sql": file("")}, wantErr: "NNNN > 0"},
		{name: "empty", files: fstest.MapFS{"d/README": file("")}, wantErr: "no .sql files"},
		{name: "missing dir", files: fstest.MapFS{}, wantErr: "read migrations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			migs, err := Load(tt.files, "d")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load: err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var got []int
			for _, m := range migs {
				got = append(got, m.Version)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("versions = %v, want %v", got, tt.want)
			}
			if migs[0].SQL != "A" || migs[0].Name != "0001_a.sql" {
				t.Fatalf("first migration = %+v", migs[0])
			}
		})
	}
}

// fakeTarget records what Run does.
type fakeTarget struct {
	applied []int
	calls   []int
	failAt  int
}

func (f *fakeTarget) AppliedVersions(context.Context) ([]int, error) {
	return slices.Clone(f.applied), nil
}

func (f *fakeTarget) Apply(_ context.Context, m Migration) error {
	f.calls = append(f.calls, m.Version)
	if m.Version == f.failAt {
		return errors.New("boom")
	}
	f.applied = append(f.applied, m.Version)
	return nil
}

func TestRun(t *testing.T) {
	migs := []Migration{{Version: 1, Name: "0001_a.sql"}, {Version: 2, Name: "0002_b.sql"}, {Version: 3, Name: "0003_c.sql"}}
	tests := []struct {
		name      string
		applied   []int
		failAt    int
		wantCalls []int
		wantN     int
		wantErr   error
		wantMsg   string
	}{
		{name: "fresh", wantCalls: []int{1, 2, 3}, wantN: 3},
		{name: "partly applied", applied: []int{1}, wantCalls: []int{2, 3}, wantN: 2},
		{name: "up to date", applied: []int{2, 1, 3}, wantN: 0},
		{name: "too new", applied: []int{1, 2, 3, 4}, wantErr: ErrTooNew, wantMsg: "schema version 4, this binary knows versions up to 3"},
		{name: "failure stops", failAt: 2, wantCalls: []int{1, 2}, wantN: 1, wantMsg: "apply migration 0002_b.sql: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := &fakeTarget{applied: tt.applied, failAt: tt.failAt}
			n, err := Run(context.Background(), ft, migs)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run: err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Fatalf("Run: err = %v, want containing %q", err, tt.wantMsg)
			}
			if tt.wantErr == nil && tt.wantMsg == "" && err != nil {
				t.Fatalf("Run: %v", err)
			}
			if n != tt.wantN || !slices.Equal(ft.calls, tt.wantCalls) {
				t.Fatalf("Run applied %d (calls %v), want %d (calls %v)", n, ft.calls, tt.wantN, tt.wantCalls)
			}
		})
	}
}
