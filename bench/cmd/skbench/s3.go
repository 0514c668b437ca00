package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandkeep/sandkeep/internal/pack"
)

// The credentials of the benchmark's versitygw (its root account).
const (
	s3Key    = "skbench"
	s3Secret = "skbench-secret-key"
)

// usage is what a prefix of a bucket holds, by the first path segment
// under the prefix ("packs", "versions", "data", "index", ...). For
// sandkeep's packs, Packs splits the "packs" bytes further.
type usage struct {
	Bytes   int64            `json:"bytes"`
	Objects int              `json:"objects"`
	ByKind  map[string]int64 `json:"by_kind"`
	Packs   *packUsage       `json:"packs,omitempty"`
}

// packUsage splits the bytes of sandkeep's packs by what they hold: the
// stored chunks of data packs, the stored trees of tree packs, and the
// footers (restic's index holds what they do). Padding between blobs, if
// any, is in Data or Trees.
type packUsage struct {
	Data    int64 `json:"data"`
	Trees   int64 `json:"trees"`
	Footers int64 `json:"footers"`
	Blobs   int   `json:"blobs"`
}

func (p packUsage) String() string {
	return fmt.Sprintf("data %.1f MB, trees %.1f MB, footers %.2f MB for %d blobs", float64(p.Data)/1e6, float64(p.Trees)/1e6, float64(p.Footers)/1e6, p.Blobs)
}

func s3Client(endpoint string) *s3.Client {
	return s3.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(s3Key, s3Secret, ""),
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
}

// bucketUsage sums the sizes of the objects under prefix with ListObjectsV2.
// each, if not nil, is called with every object's key and size.
func bucketUsage(ctx context.Context, client *s3.Client, bucket, prefix string, each func(key string, size int64) error) (usage, error) {
	u := usage{ByKind: map[string]int64{}}
	pages := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return u, err
		}
		for _, o := range page.Contents {
			key, size := aws.ToString(o.Key), aws.ToInt64(o.Size)
			kind, _, _ := strings.Cut(strings.TrimPrefix(key, prefix), "/")
			u.ByKind[kind] += size
			u.Bytes += size
			u.Objects++
			if each != nil {
				if err := each(key, size); err != nil {
					return u, err
				}
			}
		}
	}
	return u, nil
}

// sandkeepUsage is bucketUsage of a sandkeep project's prefix, with its
// packs split: it reads the footer of every pack (pack.ReadIndex, one or
// two ranged GETs each).
func sandkeepUsage(ctx context.Context, client *s3.Client, bucket, prefix string) (usage, error) {
	var pu packUsage
	u, err := bucketUsage(ctx, client, bucket, prefix, func(key string, size int64) error {
		if !strings.HasPrefix(key, prefix+"packs/") {
			return nil
		}
		entries, err := pack.ReadIndex(objectReader{ctx, client, bucket, key}, size)
		if err != nil {
			return fmt.Errorf("footer of %s: %w", key, err)
		}
		footer := int64(len(entries)*pack.EntrySize + pack.TrailerSize)
		pu.Footers += footer
		pu.Blobs += len(entries)
		if entries[0].Type == pack.Tree {
			pu.Trees += size - footer
		} else {
			pu.Data += size - footer
		}
		return nil
	})
	u.Packs = &pu
	return u, err
}

// objectReader reads an object with ranged GETs.
type objectReader struct {
	ctx         context.Context
	client      *s3.Client
	bucket, key string
}

func (o objectReader) ReadAt(p []byte, off int64) (int, error) {
	out, err := o.client.GetObject(o.ctx, &s3.GetObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1))})
	if err != nil {
		return 0, err
	}
	defer out.Body.Close()
	return io.ReadFull(out.Body, p)
}
