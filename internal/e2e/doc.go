// Package e2e holds end-to-end tests: a real coordinator (in-process, on
// loopback), the real agent code, real files, a local blob directory or a
// real S3 server (versitygw).
package e2e
