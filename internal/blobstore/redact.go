package blobstore

import (
	"errors"
	"net/url"
)

// RedactURL returns raw without its query (where signatures live) and user
// info: what may appear in a log line or an error message.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// RedactError removes signed URLs from err: the HTTP client's *url.Error
// quotes the whole URL it failed on. The error chain is kept.
func RedactError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = RedactURL(ue.URL)
	}
	return err
}
