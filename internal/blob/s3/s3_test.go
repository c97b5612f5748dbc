package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/blob/blobtest"
	"github.com/silo-cache/silo/internal/s3test"
)

func TestMain(m *testing.M) {
	code := m.Run()
	s3test.Stop()
	os.Exit(code)
}

var ctx = context.Background()

func openBucket(t *testing.T, b *s3test.Bucket, mod func(*Options)) *Store {
	t.Helper()
	o, err := ParseURL(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	o.Creds = credentials.NewStaticV4(b.AccessKey, b.SecretKey, "")
	o.PartSize = minPartSize
	o.SpoolDir = t.TempDir()
	if mod != nil {
		mod(&o)
	}
	s, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return openBucket(t, s3test.New(t), nil) })
}

// With a prefix, the store keeps to its part of a shared bucket.
func TestConformancePrefix(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		b := s3test.New(t)
		// Something of someone else's beside the prefix.
		if _, err := b.Client().PutObject(ctx, b.Name, "other/x", strings.NewReader("x"), 1, minioPut()); err != nil {
			t.Fatal(err)
		}
		return openBucket(t, b, func(o *Options) { o.Prefix = "silo/" })
	})
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// A blob of several parts streams as a multipart upload to a temporary
// object that is neither listed nor readable before Commit.
func TestMultipartInvisibleUntilCommit(t *testing.T) {
	b := s3test.New(t)
	s := openBucket(t, b, nil)
	data := random(3*minPartSize + 12345)
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 100_000)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	ups, err := s.Uploads(ctx)
	if err != nil || len(ups) != 1 {
		t.Fatalf("multipart uploads in progress = %v, %v; want one (parts stream while written)", ups, err)
	}
	var listed []string
	s.List(ctx, "", func(i blob.Info) error { listed = append(listed, i.Key); return nil })
	if len(listed) != 0 {
		t.Errorf("List before Commit: %v", listed)
	}
	if err := w.Commit(ctx, "nar/big"); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(ctx, "nar/big")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	if ups, _ := s.Uploads(ctx); len(ups) != 0 {
		t.Errorf("multipart uploads left after Commit: %v", ups)
	}
	all := map[string]bool{}
	for o := range b.Client().ListObjects(ctx, b.Name, minioList()) {
		all[o.Key] = true
	}
	if len(all) != 1 || !all["nar/big"] {
		t.Errorf("objects in the bucket after Commit: %v, want only nar/big", all)
	}
}

func TestMultipartAbort(t *testing.T) {
	b := s3test.New(t)
	s := openBucket(t, b, nil)
	w, _ := s.Create(ctx)
	w.Write(random(2*minPartSize + 1))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if ups, _ := s.Uploads(ctx); len(ups) != 0 {
		t.Errorf("Abort left multipart uploads: %v", ups)
	}
	n := 0
	for range b.Client().ListObjects(ctx, b.Name, minioList()) {
		n++
	}
	if n != 0 {
		t.Errorf("Abort left %d objects", n)
	}
}

// memJournal is a Journal in memory.
type memJournal struct {
	ups map[string]string
	at  map[string]time.Time
}

func (j *memJournal) MultipartStarted(_ context.Context, id, object string) error {
	j.ups[id], j.at[id] = object, time.Now()
	return nil
}
func (j *memJournal) MultipartTouched(_ context.Context, id string) error {
	j.at[id] = time.Now()
	return nil
}
func (j *memJournal) MultipartFinished(_ context.Context, id string) error {
	delete(j.ups, id)
	delete(j.at, id)
	return nil
}
func (j *memJournal) StaleMultiparts(_ context.Context, idle time.Duration, fn func(id, object string) error) error {
	for id, o := range j.ups {
		if time.Since(j.at[id]) > idle {
			if err := fn(id, o); err != nil {
				return err
			}
		}
	}
	return nil
}

// A writer that dies mid-upload (its process killed) leaves a multipart
// upload that Sweep aborts once it made no progress for the idle time,
// whether the journal recorded it or not; live uploads are kept.
func TestSweepAbandoned(t *testing.T) {
	for _, journal := range []bool{true, false} {
		t.Run(map[bool]string{true: "Journal", false: "BucketOnly"}[journal], func(t *testing.T) {
			b := s3test.New(t)
			j := &memJournal{ups: map[string]string{}, at: map[string]time.Time{}}
			s := openBucket(t, b, func(o *Options) {
				if journal {
					o.Journal = j
				}
			})
			dead, _ := s.Create(ctx)
			dead.Write(random(2*minPartSize + 1)) // and never Commit nor Abort
			dead.(*writer).wait()
			if n, err := s.Sweep(ctx, time.Hour); err != nil || n != 0 {
				t.Fatalf("Sweep of a recent upload = %d, %v; want it kept", n, err)
			}
			time.Sleep(2100 * time.Millisecond) // S3 times have second resolution
			live, _ := s.Create(ctx)
			defer live.Abort()
			live.Write(random(2*minPartSize + 1))
			live.(*writer).wait()
			n, err := s.Sweep(ctx, 2*time.Second)
			if err != nil || n != 1 {
				t.Fatalf("Sweep = %d, %v; want the abandoned upload aborted", n, err)
			}
			ups, _ := s.Uploads(ctx)
			if len(ups) != 1 || ups[0].UploadID != live.(*writer).uploadID {
				t.Errorf("after Sweep, uploads in progress %v; want only the live one", ups)
			}
			if journal && len(j.ups) != 1 {
				t.Errorf("journal after Sweep: %v; want only the live upload", j.ups)
			}
		})
	}
}

// Memory stays bounded while a large blob streams: the parts wait in
// spool files, not in memory.
func TestWriteBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200 MiB")
	}
	s := openBucket(t, s3test.New(t), nil)
	w, _ := s.Create(ctx)
	defer w.Abort()
	chunk := random(1 << 20)
	runtime.GC()
	var before, peak runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 200; i++ {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.HeapInuse {
				peak = m
			}
		}
	}
	if err := w.Commit(ctx, "nar/200m"); err != nil {
		t.Fatal(err)
	}
	if grew := int64(peak.HeapInuse) - int64(before.HeapInuse); grew > 16<<20 {
		t.Errorf("heap grew by %d MiB while writing 200 MiB; want it bounded (< 16 MiB)", grew>>20)
	}
	if i, err := s.Stat(ctx, "nar/200m"); err != nil || i.Size != 200<<20 {
		t.Errorf("Stat = %+v, %v", i, err)
	}
}

// Reads after a Seek use ranged GETs; a blob that vanishes under a reader
// is an error, never a short read that looks complete.
func TestReaderRanges(t *testing.T) {
	s := openBucket(t, s3test.New(t), nil)
	data := random(1 << 20)
	w, _ := s.Create(ctx)
	w.Write(data)
	if err := w.Commit(ctx, "nar/r"); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(ctx, "nar/r")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 10)
	for _, off := range []int64{500_000, 10, 1<<20 - 10, 0} {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, data[off:off+10]) {
			t.Errorf("at %d: read %x, %v; want %x", off, buf, err, data[off:off+10])
		}
	}
	r.Seek(100, io.SeekStart)
	if err := s.Delete(ctx, "nar/r"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); err == nil {
		t.Errorf("reading a deleted blob after a seek succeeded")
	}
}

func TestRedirectURL(t *testing.T) {
	b := s3test.New(t)
	s := openBucket(t, b, nil)
	if _, ok, _ := s.RedirectURL(ctx, "nar/x"); ok {
		t.Fatal("RedirectURL without redirect-ttl offers a redirect")
	}
	s = openBucket(t, b, func(o *Options) { o.RedirectTTL = time.Minute })
	if _, _, err := s.RedirectURL(ctx, "nar/x"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("RedirectURL of a missing blob: err = %v, want ErrNotFound", err)
	}
	w, _ := s.Create(ctx)
	w.Write([]byte("hello"))
	w.Commit(ctx, "nar/x")
	u, ok, err := s.RedirectURL(ctx, "nar/x")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello" {
		t.Errorf("GET of the presigned URL: %s %q", resp.Status, body)
	}
	// The signature is checked: a changed URL is refused.
	resp, err = http.Get(strings.Replace(u, "X-Amz-Signature=", "X-Amz-Signature=0", 1))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("a tampered presigned URL was accepted")
		}
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url  string
		want Options
		err  string
	}{
		{url: "s3://b", want: Options{Bucket: "b"}},
		{url: "s3://b/some/prefix?endpoint=http://h:1&region=r&lookup=path&part-size=8388608&redirect-ttl=5m&public-endpoint=https://p",
			want: Options{Bucket: "b", Prefix: "some/prefix/", Endpoint: "http://h:1", Region: "r", Lookup: "path", PartSize: 8 << 20, RedirectTTL: 5 * time.Minute, PublicEndpoint: "https://p"}},
		{url: "s3://key:secret@b", err: "credentials do not belong in the URL"},
		{url: "s3://b?colour=red", err: `unknown parameter "colour"`},
		{url: "s3://b?redirect-ttl=soon", err: "not a positive duration"},
		{url: "http://b", err: "want s3://"},
	}
	for _, tt := range tests {
		got, err := ParseURL(tt.url)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseURL(%q): err = %v, want %q", tt.url, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("ParseURL(%q): the error shows the secret: %v", tt.url, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tt.url, got, err, tt.want)
		}
	}
}

func TestCredentials(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials")
	os.WriteFile(file, []byte("[default]\naws_access_key_id = fromfile\naws_secret_access_key = s1\n[ci]\naws_access_key_id = fromprofile\naws_secret_access_key = s2\n"), 0o600)
	tests := []struct {
		name string
		env  map[string]string
		file string
		want string // access key id, or "" for an error
	}{
		{"env", map[string]string{"AWS_ACCESS_KEY_ID": "fromenv", "AWS_SECRET_ACCESS_KEY": "s"}, "", "fromenv"},
		{"env half", map[string]string{"AWS_ACCESS_KEY_ID": "fromenv"}, "", ""},
		{"shared file", map[string]string{"AWS_SHARED_CREDENTIALS_FILE": file}, "", "fromfile"},
		{"shared file profile", map[string]string{"AWS_SHARED_CREDENTIALS_FILE": file, "AWS_PROFILE": "ci"}, "", "fromprofile"},
		{"home file", map[string]string{"HOME": "/nonexistent"}, "", ""},
		{"named file wins", map[string]string{"AWS_ACCESS_KEY_ID": "fromenv", "AWS_SECRET_ACCESS_KEY": "s"}, file, "fromfile"},
		{"named file missing", nil, filepath.Join(dir, "nope"), ""},
	}
	for _, tt := range tests {
		c, err := Credentials(func(k string) string { return tt.env[k] }, tt.file)
		if tt.want == "" {
			if err == nil {
				t.Errorf("%s: no error", tt.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if v, err := c.GetWithContext(nil); err != nil || v.AccessKeyID != tt.want {
			t.Errorf("%s: access key %q, %v; want %q", tt.name, v.AccessKeyID, err, tt.want)
		}
	}
}

// Wrong credentials fail at Open, with the bucket named.
func TestOpenChecksCredentials(t *testing.T) {
	b := s3test.New(t)
	o, _ := ParseURL(b.URL())
	o.Creds = credentials.NewStaticV4(b.AccessKey, "wrong", "")
	if _, err := Open(ctx, o); err == nil || !strings.Contains(err.Error(), b.Name) {
		t.Errorf("Open with a wrong secret: err = %v, want a failure naming the bucket", err)
	}
	o.Creds = credentials.NewStaticV4(b.AccessKey, b.SecretKey, "")
	o.Bucket = "no-such-bucket"
	if _, err := Open(ctx, o); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open of a missing bucket: err = %v", err)
	}
}

func minioPut() minio.PutObjectOptions    { return minio.PutObjectOptions{} }
func minioList() minio.ListObjectsOptions { return minio.ListObjectsOptions{Recursive: true} }

// SendTo sends ranges of a blob from the S3 server's connection into an
// HTTP response (spliced), and into any writer; connections are reused.
func TestSendTo(t *testing.T) {
	s := openBucket(t, s3test.New(t), nil)
	if s.raw == nil {
		t.Fatal("no raw GETs for a plain-HTTP endpoint")
	}
	data := random(3<<20 + 17)
	w, _ := s.Create(ctx)
	w.Write(data)
	if err := w.Commit(ctx, "nar/send"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		var off, n int64
		fmt.Sscanf(req.URL.Query().Get("r"), "%d-%d", &off, &n)
		f, err := s.Open(req.Context(), "nar/send")
		if err != nil {
			http.Error(rw, err.Error(), 500)
			return
		}
		defer f.Close()
		f.Seek(off, io.SeekStart)
		rw.Header().Set("Content-Length", fmt.Sprint(n))
		rw.WriteHeader(200)
		f.(*reader).SendTo(rw, n)
	}))
	defer srv.Close()
	for _, rg := range [][2]int64{{0, int64(len(data))}, {100, 5000}, {1 << 20, 2 << 20}, {int64(len(data)) - 1, 1}} {
		resp, err := http.Get(fmt.Sprintf("%s/?r=%d-%d", srv.URL, rg[0], rg[1]))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, data[rg[0]:rg[0]+rg[1]]) {
			t.Errorf("range %v through an HTTP response: %d bytes (%v), want %d matching", rg, len(got), err, rg[1])
		}
	}
	var buf bytes.Buffer
	f, _ := s.Open(ctx, "nar/send")
	f.Seek(10, io.SeekStart)
	if n, err := f.(*reader).SendTo(&buf, 1000); err != nil || n != 1000 || !bytes.Equal(buf.Bytes(), data[10:1010]) {
		t.Errorf("SendTo a buffer: %d, %v", n, err)
	}
	f.Close()
	s.raw.mu.Lock()
	idle := len(s.raw.idle)
	s.raw.mu.Unlock()
	if idle == 0 {
		t.Errorf("no connection kept for reuse after whole bodies were sent")
	}
}

// BenchmarkWrite streams 64 MiB blobs into the bucket (multipart uploads
// of 16 MiB parts, copied into place at Commit).
func BenchmarkWrite(b *testing.B) {
	bk := s3test.New(b)
	o, _ := ParseURL(bk.URL())
	o.Creds = credentials.NewStaticV4(bk.AccessKey, bk.SecretKey, "")
	o.SpoolDir = b.TempDir()
	s, err := Open(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	chunk := random(1 << 20)
	b.SetBytes(64 << 20)
	for i := 0; b.Loop(); i++ {
		w, _ := s.Create(ctx)
		for range 64 {
			w.Write(chunk)
		}
		if err := w.Commit(ctx, fmt.Sprintf("nar/b%d", i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead reads a 64 MiB blob back through SendTo into a discarding
// HTTP response.
func BenchmarkRead(b *testing.B) {
	bk := s3test.New(b)
	o, _ := ParseURL(bk.URL())
	o.Creds = credentials.NewStaticV4(bk.AccessKey, bk.SecretKey, "")
	s, err := Open(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	w, _ := s.Create(ctx)
	chunk := random(1 << 20)
	for range 64 {
		w.Write(chunk)
	}
	if err := w.Commit(ctx, "nar/r"); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(64 << 20)
	for b.Loop() {
		r, err := s.Open(ctx, "nar/r")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.(*reader).SendTo(io.Discard, 64<<20); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

// Stored objects carry no Content-Encoding: clients sent to them by a
// presigned redirect (Nix) would try to decode it. (aws-chunked uploads
// leave "aws-chunked" on the object with some servers, versitygw among
// them.)
func TestNoContentEncoding(t *testing.T) {
	b := s3test.New(t)
	s := openBucket(t, b, nil)
	for _, size := range []int{0, 100, 2 << 20, 2*minPartSize + 5} {
		key := fmt.Sprintf("nar/ce-%d", size)
		w, _ := s.Create(ctx)
		w.Write(random(size))
		if err := w.Commit(ctx, key); err != nil {
			t.Fatal(err)
		}
		info, err := b.Client().StatObject(ctx, b.Name, key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ce := info.Metadata.Get("Content-Encoding"); ce != "" {
			t.Errorf("%d-byte blob stored with Content-Encoding %q", size, ce)
		}
	}
}
