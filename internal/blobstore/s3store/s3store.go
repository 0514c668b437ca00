// Package s3store is a blobstore.Backend on any S3-compatible service (AWS
// S3, MinIO, versitygw, R2, ...) through aws-sdk-go-v2. Signed URLs are S3
// presigned URLs, so agents talk to the object store directly.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/sandkeep/sandkeep/internal/blobstore"
)

const (
	// DefaultMaxAttempts is how often a request is tried (with the SDK's
	// standard exponential backoff) when Config.MaxAttempts is 0.
	DefaultMaxAttempts = 5
	// DefaultMaxBufferedPut is Config.MaxBufferedPut's default: 16 MiB,
	// the size of the largest pack.
	DefaultMaxBufferedPut = 16 << 20
	// MaxPresignTTL is the longest validity SigV4 presigned URLs allow.
	MaxPresignTTL = 7 * 24 * time.Hour
	// maxFullKeyLen is S3's key length limit.
	maxFullKeyLen = 1024
	// MaxPrefixLen is the longest Config.Prefix: with "/" and a key of
	// blobstore.MaxKeyLen it still fits S3's 1024-byte keys.
	MaxPrefixLen = maxFullKeyLen - 1 - blobstore.MaxKeyLen
	// deleteBatch is the most keys one DeleteObjects request takes.
	deleteBatch = 1000
)

// Config configures a Store.
type Config struct {
	// Bucket holds the objects. Required.
	Bucket string
	// Endpoint is the service URL, e.g. "http://127.0.0.1:7070"; empty
	// means AWS S3.
	Endpoint string
	// Region is the signing region; empty means the default AWS chain's
	// (AWS_REGION, shared config) or else "us-east-1".
	Region string
	// Prefix, when set, is prepended to every key with a "/" ("backups"
	// stores key "a/b" as "backups/a/b"). It must be a valid key (a
	// trailing "/" is dropped) of at most MaxPrefixLen bytes.
	Prefix string
	// PathStyle addresses the bucket in the URL path rather than the host
	// name; most non-AWS servers want it.
	PathStyle bool
	// AccessKeyID and SecretAccessKey are static credentials; when empty the
	// default AWS chain (environment, shared config, instance roles) is used.
	AccessKeyID     string
	SecretAccessKey string
	// InstanceCredentials lets the AWS chain ask the EC2 instance metadata
	// endpoint for credentials (an EC2 instance role). Off by default: on
	// any other machine that probe only delays a clear "no credentials".
	// AWS_EC2_METADATA_DISABLED, when set, decides instead.
	InstanceCredentials bool
	// CreateBucket creates Bucket in New if it does not exist.
	CreateBucket bool
	// HTTPClient sends the requests; nil means the SDK's default. It is
	// used as is: AWS_CA_BUNDLE does not apply to it.
	HTTPClient *http.Client
	// MaxAttempts bounds the tries of each request (SDK standard retryer,
	// exponential backoff with jitter); 0 means DefaultMaxAttempts.
	MaxAttempts int
	// MaxBufferedPut is the largest Put whose reader, when it is not an
	// io.ReadSeeker, is read into memory before sending; larger ones are
	// spooled to an unlinked temporary file in TempDir. Either way the
	// payload is signed (so the server verifies it) and the request can be
	// retried. 0 means DefaultMaxBufferedPut; negative means always spool.
	MaxBufferedPut int64
	// TempDir holds spooled Puts; empty means os.TempDir().
	TempDir string
}

// Store is a blobstore.Backend on an S3 bucket. It is safe for concurrent
// use.
type Store struct {
	client      *s3.Client
	presign     *s3.PresignClient
	bucket      string
	prefix      string // "" or ending in "/"
	name        string
	maxBuffered int64
	tempDir     string
}

var (
	_ blobstore.Backend       = (*Store)(nil)
	_ blobstore.PrefixDeleter = (*Store)(nil)
)

// New returns a Store for cfg. It checks that the bucket is reachable (and
// creates it when cfg.CreateBucket is set and it does not exist).
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3store: no bucket")
	}
	prefix := strings.TrimSuffix(cfg.Prefix, "/")
	if prefix != "" {
		if err := blobstore.ValidateKey(prefix); err != nil {
			return nil, fmt.Errorf("s3store: prefix: %w", err)
		}
		if len(prefix) > MaxPrefixLen {
			return nil, fmt.Errorf("s3store: prefix is %d bytes, longer than %d", len(prefix), MaxPrefixLen)
		}
	}
	if (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == "") {
		return nil, errors.New("s3store: AccessKeyID and SecretAccessKey must be set together")
	}
	attempts := cfg.MaxAttempts
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				// Client-side retry quotas only turn a bad minute into
				// failed backups; the backoff is enough.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	if !cfg.InstanceCredentials && os.Getenv("AWS_EC2_METADATA_DISABLED") == "" {
		opts = append(opts, config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3store: loading AWS config: %w", err)
	}
	if _, err := awsCfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("s3store: no AWS credentials for bucket %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE with a shared credentials file); on EC2 with an instance role, pass --s3-instance-credentials (%w)", cfg.Bucket, err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		if cfg.HTTPClient != nil {
			// Set here, not through config.WithHTTPClient, which fails
			// for an *http.Client when AWS_CA_BUNDLE is set.
			o.HTTPClient = cfg.HTTPClient
		}
		// The SDK's default CRC checksums on every request and response
		// (aws-chunked trailers) break on many non-AWS servers. Puts are
		// protected by the signed SHA-256 payload hash instead.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	maxBuffered := cfg.MaxBufferedPut
	if maxBuffered == 0 {
		maxBuffered = DefaultMaxBufferedPut
	}
	s := &Store{
		client:      client,
		presign:     s3.NewPresignClient(client),
		bucket:      cfg.Bucket,
		name:        "s3://" + cfg.Bucket,
		maxBuffered: maxBuffered,
		tempDir:     cfg.TempDir,
	}
	if prefix != "" {
		s.prefix = prefix + "/"
		s.name += "/" + prefix
	}
	if err := s.checkBucket(ctx, cfg.CreateBucket, awsCfg.Region); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) checkBucket(ctx context.Context, create bool, region string) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err == nil {
		return nil
	}
	if !isNoBucket(err) || !create {
		return fmt.Errorf("s3store: bucket %s: %w", s.bucket, err)
	}
	in := &s3.CreateBucketInput{Bucket: &s.bucket}
	if region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(region),
		}
	}
	_, err = s.client.CreateBucket(ctx, in)
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		// BucketAlreadyExists may be a race with ourselves (or a server
		// that does not say "owned by you"): the bucket is fine if we can
		// reach it.
		if _, herr := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket}); herr != nil {
			return fmt.Errorf("s3store: creating bucket %s: %w", s.bucket, err)
		}
	}
	return nil
}

// Name returns "s3://bucket" or "s3://bucket/prefix".
func (s *Store) Name() string { return s.name }

func (s *Store) fullKey(key string) string { return s.prefix + key }

// Put stores exactly size bytes from r under key.
//
// The payload is always signed, so the server checks that it received every
// byte, and the request is retried on transient errors. That needs a body
// that can be read twice: an io.ReadSeeker is measured (a size mismatch fails
// before any request) and used directly; other readers are first read into
// memory, up to Config.MaxBufferedPut bytes (default 16 MiB, the largest
// pack), or else spooled to an unlinked temporary file.
//
// (Streaming with an UNSIGNED-PAYLOAD signature is not offered: versitygw up
// to at least v1.8.0 publishes the received prefix of an aborted unsigned
// upload as a complete object.)
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := blobstore.ValidateKey(key); err != nil {
		return fmt.Errorf("s3store: put: %w", err)
	}
	if size < 0 {
		return fmt.Errorf("s3store: put %q: %w: negative size %d", key, blobstore.ErrSizeMismatch, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3store: put %q: %w", key, err)
	}
	body, cleanup, err := s.body(ctx, r, size)
	if err != nil {
		return fmt.Errorf("s3store: put %q: %w", key, err)
	}
	defer cleanup()
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           aws.String(s.fullKey(key)),
		Body:          body,
		ContentLength: aws.Int64(size),
		ContentType:   aws.String("application/octet-stream"),
	})
	if err != nil {
		return fmt.Errorf("s3store: put %q: %w", key, err)
	}
	return nil
}

// body returns a seekable reader over exactly the size bytes r yields, or
// an error wrapping blobstore.ErrSizeMismatch when r yields another number.
func (s *Store) body(ctx context.Context, r io.Reader, size int64) (io.ReadSeeker, func(), error) {
	nop := func() {}
	if rs, n, ok := seekable(r); ok {
		if n != size {
			return nil, nil, fmt.Errorf("%w: reader holds %d bytes, want %d", blobstore.ErrSizeMismatch, n, size)
		}
		return rs, nop, nil
	}
	cr := ctxReader{ctx: ctx, r: r}
	if size <= s.maxBuffered {
		b := make([]byte, size)
		if n, err := io.ReadFull(cr, b); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, nil, fmt.Errorf("%w: reader yielded %d bytes, want %d", blobstore.ErrSizeMismatch, n, size)
			}
			return nil, nil, err
		}
		if err := checkEOF(cr, size); err != nil {
			return nil, nil, err
		}
		return bytes.NewReader(b), nop, nil
	}
	f, err := os.CreateTemp(s.tempDir, "sandkeep-s3put-*")
	if err != nil {
		return nil, nil, fmt.Errorf("spooling: %w", err)
	}
	// Unlinked at once: nothing is left behind, whatever happens next.
	os.Remove(f.Name())
	cleanup := func() { f.Close() }
	n, err := io.Copy(f, io.LimitReader(cr, size))
	if err == nil && n < size {
		err = fmt.Errorf("%w: reader yielded %d bytes, want %d", blobstore.ErrSizeMismatch, n, size)
	}
	if err == nil {
		err = checkEOF(cr, size)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return f, cleanup, nil
}

// checkEOF checks that r, having yielded size bytes, has no more.
func checkEOF(r io.Reader, size int64) error {
	var one [1]byte
	switch _, err := io.ReadFull(r, one[:]); {
	case err == nil:
		return fmt.Errorf("%w: reader yielded more than %d bytes", blobstore.ErrSizeMismatch, size)
	case err != io.EOF:
		return err
	}
	return nil
}

// seekable returns r as an io.ReadSeeker and the number of bytes from its
// current position to its end, if r can seek (pipes and sockets that
// implement Seek but fail are not).
func seekable(r io.Reader) (io.ReadSeeker, int64, bool) {
	rs, ok := r.(io.ReadSeeker)
	if !ok {
		return nil, 0, false
	}
	cur, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0, false
	}
	end, err := rs.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, 0, false
	}
	if _, err := rs.Seek(cur, io.SeekStart); err != nil {
		return nil, 0, false
	}
	return rs, end - cur, true
}

// Get returns a reader over length bytes of key from offset (a negative
// length reads to the end), using an HTTP Range request.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := s.get(ctx, key, offset, length)
	if err != nil {
		return nil, fmt.Errorf("s3store: get %q: %w", key, err)
	}
	return rc, nil
}

func (s *Store) get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := blobstore.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("%w: negative offset %d", blobstore.ErrInvalidRange, offset)
	}
	if length == 0 {
		// S3 cannot serve an empty range: check the range against the size.
		size, err := s.stat(ctx, key)
		if err != nil {
			return nil, err
		}
		if _, err := blobstore.CheckRange(size, offset, length); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.fullKey(key))}
	switch {
	case length > 0 && length-1 > (1<<63-1)-offset:
		return nil, fmt.Errorf("%w: %d bytes at offset %d", blobstore.ErrInvalidRange, length, offset)
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %w", blobstore.ErrNotFound, err)
		}
		if !isInvalidRange(err) {
			return nil, err
		}
		// The range starts at or past the end. Starting exactly at the
		// end with no length is a valid, empty read.
		size, serr := s.stat(ctx, key)
		if serr != nil {
			return nil, serr
		}
		if length < 0 && offset == size {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		return nil, fmt.Errorf("%w: offset %d of a %d-byte object: %w", blobstore.ErrInvalidRange, offset, size, err)
	}
	if length > 0 {
		// S3 shortens a range that runs past the end; that is an error here.
		if got := aws.ToInt64(out.ContentLength); got != length {
			out.Body.Close()
			return nil, fmt.Errorf("%w: %d bytes at offset %d, the object has only %d there (Content-Range %q)",
				blobstore.ErrInvalidRange, length, offset, got, aws.ToString(out.ContentRange))
		}
	}
	if in.Range != nil && out.ContentRange == nil {
		out.Body.Close()
		return nil, fmt.Errorf("server ignored the Range header %q", *in.Range)
	}
	return out.Body, nil
}

// Stat returns the size of key.
func (s *Store) Stat(ctx context.Context, key string) (int64, error) {
	if err := blobstore.ValidateKey(key); err != nil {
		return 0, fmt.Errorf("s3store: stat: %w", err)
	}
	size, err := s.stat(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("s3store: stat %q: %w", key, err)
	}
	return size, nil
}

func (s *Store) stat(ctx context.Context, key string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.fullKey(key))})
	if err != nil {
		if isNotFound(err) {
			return 0, fmt.Errorf("%w: %w", blobstore.ErrNotFound, err)
		}
		return 0, err
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Delete removes key; deleting a missing key succeeds.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blobstore.ValidateKey(key); err != nil {
		return fmt.Errorf("s3store: delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3store: delete %q: %w", key, err)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(s.fullKey(key))})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("s3store: delete %q: %w", key, err)
	}
	return nil
}

// List calls fn for each object whose key starts with prefix, in lexical
// (UTF-8 byte) order. Objects under the store's prefix whose names are not
// valid keys (put there by other tools) are skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(blobstore.Object) error) error {
	if err := blobstore.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("s3store: list: %w", err)
	}
	err := s.list(ctx, prefix, "", func(page []blobstore.Object) error {
		for _, o := range page {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("s3store: list %q: %w", prefix, err)
	}
	return nil
}

// list pages through the keys under prefix after startAfter (a store key,
// or ""), calling fn with each page. Each page is requested with StartAfter
// set to the last key seen rather than with a continuation token, so that
// fn may delete what it was given without disturbing the listing.
func (s *Store) list(ctx context.Context, prefix, startAfter string, fn func([]blobstore.Object) error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		in := &s3.ListObjectsV2Input{
			Bucket:  &s.bucket,
			Prefix:  aws.String(s.fullKey(prefix)),
			MaxKeys: aws.Int32(deleteBatch),
		}
		if startAfter != "" {
			in.StartAfter = aws.String(s.fullKey(startAfter))
		}
		out, err := s.client.ListObjectsV2(ctx, in)
		if err != nil {
			return err
		}
		page := make([]blobstore.Object, 0, len(out.Contents))
		last := startAfter
		for _, o := range out.Contents {
			key, ok := strings.CutPrefix(aws.ToString(o.Key), s.prefix)
			if !ok || key <= startAfter {
				continue // not ours, or a server that ignored StartAfter
			}
			last = key
			if blobstore.ValidateKey(key) != nil {
				continue // put there by another tool
			}
			page = append(page, blobstore.Object{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)})
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return nil
		}
		if last == startAfter {
			return fmt.Errorf("listing after %q made no progress", startAfter)
		}
		startAfter = last
	}
}

// DeletePrefix deletes every object whose key starts with prefix with
// DeleteObjects requests of up to 1000 keys. Use blobstore.DeletePrefix,
// which validates prefix and calls this.
func (s *Store) DeletePrefix(ctx context.Context, prefix string) (objects int, bytes int64, err error) {
	if prefix == "" {
		return 0, 0, fmt.Errorf("s3store: delete prefix: %w: empty prefix", blobstore.ErrInvalidKey)
	}
	if err := blobstore.ValidatePrefix(prefix); err != nil {
		return 0, 0, fmt.Errorf("s3store: delete prefix: %w", err)
	}
	err = s.list(ctx, prefix, "", func(page []blobstore.Object) error {
		ids := make([]types.ObjectIdentifier, len(page))
		sizes := make(map[string]int64, len(page))
		for i, o := range page {
			ids[i] = types.ObjectIdentifier{Key: aws.String(s.fullKey(o.Key))}
			sizes[s.fullKey(o.Key)] = o.Size
		}
		out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: &s.bucket,
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		})
		if err != nil {
			return err
		}
		var errs []error
		for _, e := range out.Errors {
			if aws.ToString(e.Code) == "NoSuchKey" {
				continue // deleted meanwhile: fine
			}
			delete(sizes, aws.ToString(e.Key))
			errs = append(errs, fmt.Errorf("%s: %s: %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message)))
		}
		for _, n := range sizes {
			objects++
			bytes += n
		}
		if len(errs) > 0 {
			return fmt.Errorf("%d of %d deletes failed: %w", len(errs), len(ids), errors.Join(errs...))
		}
		return nil
	})
	if err != nil {
		return objects, bytes, fmt.Errorf("s3store: delete prefix %q: %w", prefix, err)
	}
	return objects, bytes, nil
}

// SignPut presigns a PutObject of exactly size bytes, valid for ttl (at most
// MaxPresignTTL). The request must carry the returned headers, including
// Content-Length (SignedURL.NewRequest does that). A ttl <= 0 gives a URL
// that has already expired.
func (s *Store) SignPut(ctx context.Context, key string, size int64, ttl time.Duration) (blobstore.SignedURL, error) {
	if err := blobstore.ValidateKey(key); err != nil {
		return blobstore.SignedURL{}, fmt.Errorf("s3store: sign put: %w", err)
	}
	if size < 0 {
		return blobstore.SignedURL{}, fmt.Errorf("s3store: sign put %q: negative size %d", key, size)
	}
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           aws.String(s.fullKey(key)),
		ContentLength: aws.Int64(size),
		// Create only: the header is signed, so the holder of the URL cannot
		// drop it, and the server refuses (412) a PUT over an existing key.
		IfNoneMatch: aws.String("*"),
	}
	return s.sign(ctx, http.MethodPut, key, ttl, func(opt func(*s3.PresignOptions)) (*v4.PresignedHTTPRequest, error) {
		return s.presign.PresignPutObject(ctx, in, opt)
	})
}

// SignGet presigns a GetObject of key, valid for ttl (at most
// MaxPresignTTL); the client may add a Range header. A ttl <= 0 gives a URL
// that has already expired.
func (s *Store) SignGet(ctx context.Context, key string, ttl time.Duration) (blobstore.SignedURL, error) {
	if err := blobstore.ValidateKey(key); err != nil {
		return blobstore.SignedURL{}, fmt.Errorf("s3store: sign get: %w", err)
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.fullKey(key))}
	return s.sign(ctx, http.MethodGet, key, ttl, func(opt func(*s3.PresignOptions)) (*v4.PresignedHTTPRequest, error) {
		return s.presign.PresignGetObject(ctx, in, opt)
	})
}

func (s *Store) sign(ctx context.Context, method, key string, ttl time.Duration,
	presign func(func(*s3.PresignOptions)) (*v4.PresignedHTTPRequest, error),
) (blobstore.SignedURL, error) {
	if err := ctx.Err(); err != nil {
		return blobstore.SignedURL{}, fmt.Errorf("s3store: sign %s %q: %w", method, key, err)
	}
	if ttl > MaxPresignTTL {
		return blobstore.SignedURL{}, fmt.Errorf("s3store: sign %s %q: ttl %v longer than %v", method, key, ttl, MaxPresignTTL)
	}
	at, valid := presignWindow(time.Now(), ttl)
	req, err := presign(func(o *s3.PresignOptions) {
		o.Expires = valid
		o.Presigner = fixedTimePresigner{base: presigner, at: at}
	})
	if err != nil {
		return blobstore.SignedURL{}, fmt.Errorf("s3store: sign %s %q: %w", method, key, err)
	}
	headers := make(map[string]string, len(req.SignedHeader))
	for k, vs := range req.SignedHeader {
		if !strings.EqualFold(k, "Host") {
			headers[http.CanonicalHeaderKey(k)] = strings.Join(vs, ",")
		}
	}
	return blobstore.SignedURL{
		Method:  req.Method,
		URL:     req.URL,
		Headers: headers,
		Expires: at.Add(valid),
	}, nil
}

// presignWindow returns the signing time and validity of a URL that should
// expire ttl after now. SigV4 counts whole seconds from the signing time: a
// positive ttl is rounded up to whole seconds from now (truncated); for a
// ttl <= 0, the URL is signed in the past so that it expired a second before
// now+ttl.
func presignWindow(now time.Time, ttl time.Duration) (at time.Time, valid time.Duration) {
	now = now.Truncate(time.Second)
	if ttl <= 0 {
		return now.Add(ttl).Truncate(time.Second).Add(-2 * time.Second), time.Second
	}
	valid = (ttl + time.Second - 1).Truncate(time.Second)
	return now, valid
}

// presigner is the SigV4 signer configured as the S3 client's own (S3 paths
// are not escaped twice).
var presigner = v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })

// fixedTimePresigner signs at a chosen time instead of the current one.
type fixedTimePresigner struct {
	base *v4.Signer
	at   time.Time
}

func (p fixedTimePresigner) PresignHTTP(ctx context.Context, creds aws.Credentials, r *http.Request,
	payloadHash, service, region string, _ time.Time, optFns ...func(*v4.SignerOptions),
) (string, http.Header, error) {
	return p.base.PresignHTTP(ctx, creds, r, payloadHash, service, region, p.at, optFns...)
}

// isNotFound reports whether err is S3's "no such key" (HEAD requests carry
// no error code, only the 404 status). A missing bucket is not a missing
// object: it is a configuration error and must not look like data loss.
func isNotFound(err error) bool {
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		case "NoSuchBucket":
			return false
		}
	}
	var resp *smithyhttp.ResponseError
	return errors.As(err, &resp) && resp.HTTPStatusCode() == http.StatusNotFound
}

// isNoBucket reports whether err from HeadBucket says the bucket does not
// exist.
func isNoBucket(err error) bool {
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchBucket", "NotFound":
			return true
		}
	}
	var resp *smithyhttp.ResponseError
	return errors.As(err, &resp) && resp.HTTPStatusCode() == http.StatusNotFound
}

func isInvalidRange(err error) bool {
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "InvalidRange" {
		return true
	}
	var resp *smithyhttp.ResponseError
	return errors.As(err, &resp) && resp.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
