package s3

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// Sweep removes what interrupted uploads left: multipart uploads that made
// no progress for idle (those the journal lists, and those only the
// bucket lists, from a crash before they were recorded), and temporary
// objects older than idle (a crash between completing and copying). It
// returns how many uploads and objects it removed. Uploads in progress
// send a part at least every few minutes, so idle should be well above
// the server's upload idle timeout.
func (s *Store) Sweep(ctx context.Context, idle time.Duration) (int, error) {
	removed := 0
	abort := func(uploadID, object string) error {
		err := s.core.AbortMultipartUpload(ctx, s.opts.Bucket, object, uploadID)
		if err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
			return fmt.Errorf("abort multipart upload %s of %s: %w", uploadID, object, err)
		}
		if err == nil {
			removed++
		}
		if s.opts.Journal != nil {
			return s.opts.Journal.MultipartFinished(ctx, uploadID)
		}
		return nil
	}
	if j := s.opts.Journal; j != nil {
		if err := j.StaleMultiparts(ctx, idle, abort); err != nil {
			return removed, fmt.Errorf("sweep uploads: %w", err)
		}
	}
	cutoff := time.Now().Add(-idle)
	prefix := s.opts.Prefix + uploadsDir
	keyMarker, idMarker := "", ""
	for {
		res, err := s.core.ListMultipartUploads(ctx, s.opts.Bucket, prefix, keyMarker, idMarker, "", 1000)
		if err != nil {
			return removed, fmt.Errorf("sweep uploads: list multipart uploads: %w", err)
		}
		for _, u := range res.Uploads {
			if !strings.HasPrefix(u.Key, prefix) || u.Initiated.After(cutoff) {
				continue
			}
			last, err := s.lastProgress(ctx, u)
			if err != nil {
				return removed, fmt.Errorf("sweep uploads: %w", err)
			}
			if last.Before(cutoff) {
				if err := abort(u.UploadID, u.Key); err != nil {
					return removed, fmt.Errorf("sweep uploads: %w", err)
				}
			}
		}
		if !res.IsTruncated {
			break
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range s.core.Client.ListObjects(lctx, s.opts.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return removed, fmt.Errorf("sweep uploads: list temporary objects: %w", o.Err)
		}
		if o.LastModified.Before(cutoff) {
			if err := s.core.RemoveObject(ctx, s.opts.Bucket, o.Key, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
				return removed, fmt.Errorf("sweep uploads: remove %s: %w", o.Key, err)
			}
			removed++
		}
	}
	return removed, nil
}

// lastProgress returns when the upload last received a part (or started).
func (s *Store) lastProgress(ctx context.Context, u minio.ObjectMultipartInfo) (time.Time, error) {
	last := u.Initiated
	marker := 0
	for {
		res, err := s.core.ListObjectParts(ctx, s.opts.Bucket, u.Key, u.UploadID, marker, 1000)
		if minio.ToErrorResponse(err).Code == "NoSuchUpload" {
			return last, nil
		}
		if err != nil {
			return last, fmt.Errorf("list parts of %s: %w", u.Key, err)
		}
		for _, p := range res.ObjectParts {
			if p.LastModified.After(last) {
				last = p.LastModified
			}
		}
		if !res.IsTruncated {
			return last, nil
		}
		marker = res.NextPartNumberMarker
	}
}

// Uploads returns the multipart uploads in progress (for tests and the
// status of a sweep).
func (s *Store) Uploads(ctx context.Context) ([]minio.ObjectMultipartInfo, error) {
	res, err := s.core.ListMultipartUploads(ctx, s.opts.Bucket, s.opts.Prefix+uploadsDir, "", "", "", 1000)
	if err != nil {
		return nil, fmt.Errorf("list multipart uploads: %w", err)
	}
	return res.Uploads, nil
}
