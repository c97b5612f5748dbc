package main

import (
	"context"
	"fmt"
	"os"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func main() {
	c, err := minio.New(os.Args[1], &minio.Options{Creds: credentials.NewStaticV4(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""), Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
	if err == nil {
		err = c.MakeBucket(context.Background(), os.Args[2], minio.MakeBucketOptions{Region: "us-east-1"})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
