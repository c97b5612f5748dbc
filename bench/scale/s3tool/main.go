// Command s3tool is bench/scale.sh's helper for the S3 server it starts:
//
//	s3tool mkbucket ENDPOINT BUCKET        create a bucket
//	s3tool presign ENDPOINT BUCKET < KEYS  print a presigned GET URL (valid 2 h) per key
//
// Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the
// region is us-east-1. Presigned URLs let the benchmark's load client read
// objects straight from the S3 server, for comparison with reading them
// through silo serve.
package main

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: s3tool mkbucket|presign ENDPOINT BUCKET")
		os.Exit(2)
	}
	cmd, endpoint, bucket := os.Args[1], os.Args[2], os.Args[3]
	u, err := url.Parse(endpoint)
	if err != nil {
		fail(err)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
		Secure:       u.Scheme == "https",
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	switch cmd {
	case "mkbucket":
		err = c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"})
	case "presign":
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() && err == nil {
			var p *url.URL
			if p, err = c.PresignedGetObject(ctx, bucket, sc.Text(), 2*time.Hour, nil); err == nil {
				fmt.Println(p)
			}
		}
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "s3tool:", err)
	os.Exit(1)
}
