package main

import (
	"context"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The credentials of the benchmark's versitygw (its root account).
const (
	s3Key    = "skbench"
	s3Secret = "skbench-secret-key"
)

// usage is what a prefix of a bucket holds, by the first path segment
// under the prefix ("packs", "versions", "data", "index", ...).
type usage struct {
	Bytes   int64            `json:"bytes"`
	Objects int              `json:"objects"`
	ByKind  map[string]int64 `json:"by_kind"`
}

// bucketUsage sums the sizes of the objects under prefix with ListObjectsV2.
func bucketUsage(ctx context.Context, endpoint, bucket, prefix string) (usage, error) {
	client := s3.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(s3Key, s3Secret, ""),
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
	u := usage{ByKind: map[string]int64{}}
	pages := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return u, err
		}
		for _, o := range page.Contents {
			kind, _, _ := strings.Cut(strings.TrimPrefix(aws.ToString(o.Key), prefix), "/")
			size := aws.ToInt64(o.Size)
			u.ByKind[kind] += size
			u.Bytes += size
			u.Objects++
		}
	}
	return u, nil
}
