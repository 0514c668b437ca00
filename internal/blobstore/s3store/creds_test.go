package s3store

import (
	"strings"
	"testing"
)

// Without credentials, New says which variables to set (and does not
// wait on the EC2 metadata endpoint, which it does not ask unless told).
func TestNoCredentialsSaysWhatToSet(t *testing.T) {
	home := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "",
		"AWS_SHARED_CREDENTIALS_FILE": home + "/none", "AWS_CONFIG_FILE": home + "/none", "HOME": home,
		"AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
		"AWS_EC2_METADATA_DISABLED": "",
	} {
		t.Setenv(k, v)
	}
	_, err := New(t.Context(), Config{Bucket: "b", Endpoint: "http://127.0.0.1:1", PathStyle: true})
	if err == nil {
		t.Fatal("New without credentials succeeded")
	}
	for _, want := range []string{"no AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "--s3-instance-credentials"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
