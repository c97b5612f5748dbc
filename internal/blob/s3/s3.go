// Package s3 stores blobs as objects in an S3-compatible bucket (AWS S3,
// versitygw, Garage, Ceph RGW, R2, ...), through minio-go.
//
// A blob with key K is the object PREFIX+K. Invariants:
//   - Nothing is visible before Commit. A blob up to PartSize is sent with
//     one PUT at Commit, from memory (small) or a spool file. A larger one
//     streams as a multipart upload to a temporary object under
//     PREFIX.uploads/ (never a valid blob key, never listed) while it is
//     written, one part in flight beside the one being filled; Commit
//     completes it and copies it server-side to PREFIX+K, then deletes the
//     temporary object. Memory per writer is bounded (spool files hold the
//     parts, unlinked at once so a crash leaves none).
//   - Multipart uploads are recorded (Options.Journal) when started and
//     touched at every part; Sweep aborts those that stopped making
//     progress (a replica killed mid-upload), and reconciles with the
//     bucket's own list of uploads and temporary objects, which also
//     catches what a crash left before it was recorded.
//   - Open decides before returning whether the blob exists: a missing
//     blob is ErrNotFound before any byte is served. Reads stream, with
//     ranged GETs after a Seek. From a plain-HTTP server (one on the local
//     network) GETs go over connections of the store's own (raw.go), and
//     SendTo splices a body from that socket into the client's.
//   - Payloads are signed by their SHA-256, computed while they are
//     spooled, never sent aws-chunked: some servers keep that encoding on
//     the object, and clients following a presigned redirect would see it.
//   - Credentials come from the environment (AWS_ACCESS_KEY_ID,
//     AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or a shared credentials
//     file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE, or a file named by
//     the caller), never from the URL.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/silo-cache/silo/internal/blob"
)

var _ blob.Store = (*Store)(nil)

// Journal records multipart uploads in progress, so that those of a
// crashed process can be found and aborted. meta/postgres implements it.
type Journal interface {
	MultipartStarted(ctx context.Context, uploadID, object string) error
	MultipartTouched(ctx context.Context, uploadID string) error
	MultipartFinished(ctx context.Context, uploadID string) error
	// StaleMultiparts calls fn for every upload that made no progress for idle.
	StaleMultiparts(ctx context.Context, idle time.Duration, fn func(uploadID, object string) error) error
}

// Options configure a Store. Zero values mean the documented defaults.
type Options struct {
	Bucket string // required
	// Prefix is prepended to every object key ("" or e.g. "silo/").
	Prefix string
	// Endpoint is the server's URL, "https://s3.example.com" or
	// "http://127.0.0.1:7070"; "" means AWS S3 in Region.
	Endpoint string
	// Region is the bucket's region; "" means us-east-1.
	Region string
	// Lookup is how the bucket is addressed: "path" (host/bucket/key, what
	// most S3-compatible servers need), "dns" (bucket.host/key) or "" for
	// minio-go's choice (DNS for AWS, path otherwise).
	Lookup string
	// Creds are the credentials; nil means Credentials(os.Getenv, "").
	Creds *credentials.Credentials
	// PartSize is the multipart part size (at least 5 MiB); 0 means 16 MiB.
	PartSize int64
	// SpoolDir holds the parts being assembled; "" means os.TempDir().
	SpoolDir string
	// Journal, if set, records multipart uploads (see Sweep).
	Journal Journal
	// RedirectTTL, if positive, makes RedirectURL answer presigned GET URLs
	// valid this long, signed for PublicEndpoint (default: Endpoint).
	RedirectTTL    time.Duration
	PublicEndpoint string
}

// Store is a blob.Store in an S3 bucket.
type Store struct {
	opts    Options
	core    *minio.Core
	presign *minio.Client // for PublicEndpoint; nil without redirects
	raw     *rawGetter    // GETs with spliced bodies; nil for TLS or DNS lookups
}

// uploadsDir is where multipart uploads assemble: a key ValidKey rejects.
const uploadsDir = ".uploads/"

const (
	minPartSize     = 5 << 20
	defaultPartSize = 16 << 20
)

// ParseURL parses an s3:// URL as silo's --blobs takes it:
//
//	s3://BUCKET[/PREFIX]?endpoint=URL&region=R&lookup=path|dns&part-size=BYTES
//	    &redirect-ttl=DURATION&public-endpoint=URL
func ParseURL(raw string) (Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Options{}, fmt.Errorf("blob URL %q: %w", raw, err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return Options{}, fmt.Errorf("blob URL %q: want s3://BUCKET[/PREFIX]?endpoint=...&region=...", raw)
	}
	if u.User != nil {
		return Options{}, fmt.Errorf("blob URL %q: credentials do not belong in the URL (it shows in ps and logs); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a credentials file", u.Redacted())
	}
	o := Options{Bucket: u.Host, Prefix: strings.TrimPrefix(u.Path, "/")}
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "region", "lookup", "part-size", "redirect-ttl", "public-endpoint":
		default:
			return Options{}, fmt.Errorf("blob URL %q: unknown parameter %q (known: endpoint, region, lookup, part-size, redirect-ttl, public-endpoint)", raw, k)
		}
	}
	o.Endpoint, o.Region, o.Lookup, o.PublicEndpoint = q.Get("endpoint"), q.Get("region"), q.Get("lookup"), q.Get("public-endpoint")
	if v := q.Get("part-size"); v != "" {
		if o.PartSize, err = strconv.ParseInt(v, 10, 64); err != nil {
			return Options{}, fmt.Errorf("blob URL %q: part-size %q is not a number of bytes", raw, v)
		}
	}
	if v := q.Get("redirect-ttl"); v != "" {
		if o.RedirectTTL, err = time.ParseDuration(v); err != nil || o.RedirectTTL <= 0 {
			return Options{}, fmt.Errorf("blob URL %q: redirect-ttl %q is not a positive duration (e.g. 5m)", raw, v)
		}
	}
	return o, nil
}

// Credentials returns the credentials from the environment (getenv):
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or
// else the shared credentials file AWS_SHARED_CREDENTIALS_FILE (default
// ~/.aws/credentials), profile AWS_PROFILE (default "default"). A file
// given overrides both.
func Credentials(getenv func(string) string, file string) (*credentials.Credentials, error) {
	profile := getenv("AWS_PROFILE")
	if file != "" {
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("S3 credentials file: %w", err)
		}
		c := credentials.NewFileAWSCredentials(file, profile)
		if _, err := c.GetWithContext(nil); err != nil {
			return nil, fmt.Errorf("S3 credentials file %s (profile %q): %w", file, profileName(profile), err)
		}
		return c, nil
	}
	if id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"); id != "" || secret != "" {
		if id == "" || secret == "" {
			return nil, errors.New("S3 credentials: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
		}
		return credentials.NewStaticV4(id, secret, getenv("AWS_SESSION_TOKEN")), nil
	}
	shared := getenv("AWS_SHARED_CREDENTIALS_FILE")
	if shared == "" {
		if home := getenv("HOME"); home != "" {
			shared = filepath.Join(home, ".aws", "credentials")
		}
	}
	if shared != "" {
		if _, err := os.Stat(shared); err == nil {
			c := credentials.NewFileAWSCredentials(shared, profile)
			if _, err := c.GetWithContext(nil); err != nil {
				return nil, fmt.Errorf("S3 credentials file %s (profile %q): %w", shared, profileName(profile), err)
			}
			return c, nil
		}
	}
	return nil, errors.New("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE (an AWS credentials file), or name a credentials file with --s3-credentials-file")
}

func profileName(p string) string {
	if p == "" {
		return "default"
	}
	return p
}

func newClient(endpoint string, o Options) (*minio.Client, error) {
	secure := true
	host := "s3.amazonaws.com"
	if o.Region != "" && o.Region != "us-east-1" {
		host = "s3." + o.Region + ".amazonaws.com"
	}
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("S3 endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", endpoint)
		}
		host, secure = u.Host, u.Scheme == "https"
	}
	lookup := minio.BucketLookupAuto
	switch o.Lookup {
	case "", "auto":
	case "path":
		lookup = minio.BucketLookupPath
	case "dns":
		lookup = minio.BucketLookupDNS
	default:
		return nil, fmt.Errorf("S3 lookup %q: want path, dns or auto", o.Lookup)
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	// Every replica streams many objects at once: keep their connections.
	tr.MaxIdleConnsPerHost = 128
	tr.WriteBufferSize, tr.ReadBufferSize = 64<<10, 64<<10
	return minio.New(host, &minio.Options{Creds: o.Creds, Secure: secure, Region: o.Region, BucketLookup: lookup, Transport: tr})
}

// Open returns the store for the bucket, checking that it is reachable
// with the credentials.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Bucket == "" {
		return nil, errors.New("open S3 blob store: no bucket")
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.PartSize == 0 {
		o.PartSize = defaultPartSize
	}
	if o.PartSize < minPartSize {
		return nil, fmt.Errorf("open S3 blob store: part size %d is below S3's minimum of 5 MiB", o.PartSize)
	}
	if o.SpoolDir == "" {
		o.SpoolDir = os.TempDir()
	}
	if o.Creds == nil {
		c, err := Credentials(os.Getenv, "")
		if err != nil {
			return nil, fmt.Errorf("open S3 blob store: %w", err)
		}
		o.Creds = c
	}
	client, err := newClient(o.Endpoint, o)
	if err != nil {
		return nil, fmt.Errorf("open S3 blob store: %w", err)
	}
	s := &Store{opts: o, core: &minio.Core{Client: client}}
	s.raw = newRawGetter(s)
	if o.RedirectTTL > 0 {
		pub := o.PublicEndpoint
		if pub == "" {
			pub = o.Endpoint
		}
		if s.presign, err = newClient(pub, o); err != nil {
			return nil, fmt.Errorf("open S3 blob store: public endpoint: %w", err)
		}
	}
	ok, err := client.BucketExists(ctx, o.Bucket)
	if err != nil {
		return nil, fmt.Errorf("open S3 blob store: bucket %s at %s: %w", o.Bucket, client.EndpointURL().Host, err)
	}
	if !ok {
		return nil, fmt.Errorf("open S3 blob store: bucket %s does not exist at %s (create it first)", o.Bucket, client.EndpointURL().Host)
	}
	return s, nil
}

// String describes the store for logs.
func (s *Store) String() string {
	return "s3://" + s.opts.Bucket + "/" + s.opts.Prefix + " at " + s.core.EndpointURL().Host
}

func (s *Store) object(key string) (string, error) {
	if err := blob.ValidKey(key); err != nil {
		return "", err
	}
	return s.opts.Prefix + key, nil
}

func isNotFound(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == minio.NoSuchKey || code == "NotFound" || minio.ToErrorResponse(err).StatusCode == http.StatusNotFound && code != minio.NoSuchBucket
}

func wrapErr(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%s blob %s: %w", op, key, blob.ErrNotFound)
	}
	switch minio.ToErrorResponse(err).Code {
	case "EntityTooLarge", "QuotaExceeded", "StorageFull", "XMinioStorageFull":
		return fmt.Errorf("%s blob %s: %w (%v)", op, key, blob.ErrFull, err)
	}
	return fmt.Errorf("%s blob %s: %w", op, key, err)
}

// Open opens the blob under key. The first GET is sent at once, so that a
// missing blob is reported here; its body is read by the first Reads.
func (s *Store) Open(ctx context.Context, key string) (io.ReadSeekCloser, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, err
	}
	if s.raw != nil {
		body, size, etag, err := s.raw.get(ctx, key, obj, 0, -1, "")
		if err != nil {
			return nil, err
		}
		return &reader{s: s, ctx: ctx, key: key, obj: obj, size: size, etag: etag, body: body}, nil
	}
	body, info, _, err := s.core.GetObject(ctx, s.opts.Bucket, obj, minio.GetObjectOptions{})
	if err != nil {
		return nil, wrapErr("open", key, err)
	}
	return &reader{s: s, ctx: ctx, key: key, obj: obj, size: info.Size, etag: info.ETag, body: body}, nil
}

// Stat describes the blob under key.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	obj, err := s.object(key)
	if err != nil {
		return blob.Info{}, err
	}
	info, err := s.core.StatObject(ctx, s.opts.Bucket, obj, minio.StatObjectOptions{})
	if err != nil {
		return blob.Info{}, wrapErr("stat", key, err)
	}
	return blob.Info{Key: key, Size: info.Size, ModTime: info.LastModified}, nil
}

// Delete removes the blob under key.
func (s *Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	if err := s.core.RemoveObject(ctx, s.opts.Bucket, obj, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return wrapErr("delete", key, err)
	}
	return nil
}

// List calls fn for every blob whose key starts with prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(blob.Info) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine when fn fails
	for o := range s.core.Client.ListObjects(ctx, s.opts.Bucket, minio.ListObjectsOptions{Prefix: s.opts.Prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list blobs %q in %s: %w", prefix, s, o.Err)
		}
		key := strings.TrimPrefix(o.Key, s.opts.Prefix)
		if blob.ValidKey(key) != nil {
			continue // temporary objects of uploads, or foreign objects
		}
		if err := fn(blob.Info{Key: key, Size: o.Size, ModTime: o.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// RedirectURL returns a presigned URL for reading the blob under key,
// valid for Options.RedirectTTL, and true; or false if redirects are off.
// The blob is checked to exist first, so a missing one is ErrNotFound.
func (s *Store) RedirectURL(ctx context.Context, key string) (string, bool, error) {
	if s.presign == nil {
		return "", false, nil
	}
	if _, err := s.Stat(ctx, key); err != nil {
		return "", true, err
	}
	u, err := s.presign.PresignedGetObject(ctx, s.opts.Bucket, s.opts.Prefix+key, s.opts.RedirectTTL, nil)
	if err != nil {
		return "", true, fmt.Errorf("presign blob %s: %w", key, err)
	}
	return u.String(), true, nil
}
