package cli

import (
	"bytes"
	"testing"

	"github.com/spf13/cobra"
)

func TestPrintJSONAndErrors(t *testing.T) {
	var b bytes.Buffer
	if err := PrintJSON(&b, map[string]string{"url": "http://x/?a=1&b=2"}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "{\n  \"url\": \"http://x/?a=1&b=2\"\n}\n" {
		t.Fatalf("%q", b.String())
	}
	b.Reset()
	PrintError(&b, Error{Code: "NotFound", Message: "no such project"})
	if b.String() != `{"error":{"code":"NotFound","message":"no such project"}}`+"\n" {
		t.Fatalf("%q", b.String())
	}
	c := &cobra.Command{Use: "x"}
	c.Flags().Bool("json", false, "")
	if WantsJSON(c) || WantsJSON(nil) {
		t.Fatal("json before it is set")
	}
	_ = c.Flags().Set("json", "true")
	if !WantsJSON(c) {
		t.Fatal("json not seen")
	}
}
