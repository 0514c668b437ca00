// Package redact keeps signed URLs out of logs and error messages: a
// signed URL is a credential until it expires. Both binaries use it.
package redact

import (
	"errors"
	"net/url"
)

// URL returns raw without its query (where signatures live) and user
// info: what may appear in a log line or an error message.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// Error removes signed URLs from err: the HTTP client's *url.Error
// quotes the whole URL it failed on. The error chain is kept.
func Error(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = URL(ue.URL)
	}
	return err
}
