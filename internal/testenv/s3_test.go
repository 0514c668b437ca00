package testenv

import (
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

func TestNewBucketName(t *testing.T) {
	seen := map[string]bool{}
	for _, name := range []string{"", "A", "x/Y_Z", strings.Repeat("Long-Name/", 20), "--", "ünïcode"} {
		t.Run(name, func(t *testing.T) {
			for range 3 {
				b := NewBucketName(t)
				if !bucketRE.MatchString(b) || strings.Contains(b, "--") {
					t.Errorf("NewBucketName = %q, not a valid bucket name", b)
				}
				if seen[b] {
					t.Errorf("NewBucketName = %q twice", b)
				}
				seen[b] = true
			}
		})
	}
}

func TestS3(t *testing.T) {
	env := S3(t)
	if env.Endpoint == "" || env.AccessKey == "" || env.SecretKey == "" || env.Region == "" {
		t.Fatalf("incomplete S3Env %+v", env)
	}
	if again := S3(t); again != env {
		t.Fatalf("second S3() = %+v, want the same server %+v", again, env)
	}
	c := s3.New(s3.Options{
		BaseEndpoint: aws.String(env.Endpoint),
		Region:       env.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(env.AccessKey, env.SecretKey, ""),
	})
	bucket := NewBucketName(t)
	if _, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("CreateBucket(%s): %v", bucket, err)
	}
	if _, err := c.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("k"), Body: strings.NewReader("v"),
	}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	out, err := c.ListBuckets(t.Context(), &s3.ListBucketsInput{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range out.Buckets {
		found = found || aws.ToString(b.Name) == bucket
	}
	if !found {
		t.Errorf("bucket %s not listed", bucket)
	}
}
