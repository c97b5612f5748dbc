package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/pgtest"
	"github.com/silo-cache/silo/internal/s3test"
)

// scaled is an installation on one PostgreSQL database and one bucket,
// with silo serve replicas on them.
type scaled struct {
	t      *testing.T
	bin    string
	db     string
	bucket *s3test.Bucket
	env    []string
	flags  []string
}

func newScaled(t *testing.T) *scaled {
	pg := pgtest.StartT(t, pgtest.Options{})
	s3 := s3test.StartT(t)
	s := &scaled{t: t, bin: nixtest.SiloBinary(t), db: pg.NewDatabase(t), bucket: s3.NewBucket(t)}
	s.env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, s.bucket.Env()...)
	s.flags = []string{"--db", s.db, "--blobs", s.bucket.URL()}
	return s
}

// silo runs an admin command against the shared database and returns
// its stdout.
func (s *scaled) silo(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.bin, append(args, "--db", s.db)...) // admin commands need only the database
	cmd.Env = s.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("silo %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// replica starts a silo serve on the shared storage.
func (s *scaled) replica(extra ...string) *server {
	t := s.t
	t.Helper()
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "json"}, s.flags...)
	cmd := exec.Command(s.bin, append(args, extra...)...)
	cmd.Env = s.env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &server{cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		r.mu.Lock()
		r.log.WriteString(lines.Text() + "\n")
		r.mu.Unlock()
		if strings.Contains(lines.Text(), `"msg":"silo serve listening"`) {
			_, rest, _ := strings.Cut(lines.Text(), `"url":"`)
			r.url, _, _ = strings.Cut(rest, `"`)
			break
		}
	}
	if r.url == "" {
		t.Fatalf("silo serve did not say where it listens:\n%s", r.logs())
	}
	go func() {
		for lines.Scan() {
			r.mu.Lock()
			r.log.WriteString(lines.Text() + "\n")
			r.mu.Unlock()
		}
	}()
	return r
}

func publicKeyOf(t *testing.T, info string) string {
	for _, line := range strings.Split(info, "\n") {
		if k, ok := strings.CutPrefix(line, "Public key:"); ok {
			return strings.TrimSpace(k)
		}
	}
	t.Fatalf("no public key in:\n%s", info)
	return ""
}

// Three replicas on one PostgreSQL database and one S3 bucket behave as
// one cache: the real Nix pushes through one and substitutes through
// another, admin commands take effect at once on all, eight concurrent
// pushes of overlapping closures spread over them while garbage is
// collected lose nothing, and a replica killed mid-upload leaves nothing
// partial and its multipart upload is swept.
func TestReplicas(t *testing.T) {
	n := nixtest.Require(t)
	s := newScaled(t)
	gc := []string{"--gc-interval", "300ms", "--gc-grace", "1s", "--multipart-idle", "2s"}
	a, b, c := s.replica(gc...), s.replica(gc...), s.replica(gc...)
	replicas := []*server{a, b, c}

	key := publicKeyOf(t, s.silo("cache", "create", "main", "--public"))
	pushTok := strings.TrimSpace(s.silo("token", "create", "--cache", "*", "--push"))
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+pushTok+"\n"), 0o600)
	auth := []string{"--option", "netrc-file", netrc}
	trust := []string{"--option", "trusted-public-keys", key}

	t.Run("AdminVisibleAtOnce", func(t *testing.T) {
		for _, r := range replicas {
			// A cache that does not exist answers anonymous readers as a private one.
			if st := status(t, "GET", r.url+"/late/nix-cache-info", "", nil); st != 401 {
				t.Fatalf("cache before creation: %d", st)
			}
		}
		s.silo("cache", "create", "late", "--public")
		for _, r := range replicas {
			if st := status(t, "GET", r.url+"/late/nix-cache-info", "", nil); st != 200 {
				t.Errorf("%s: a cache created by an admin command: %d, want 200 at once", r.url, st)
			}
		}
		s.silo("cache", "delete", "--yes", "late")
		for _, r := range replicas {
			// A cache that does not exist answers anonymous readers as a private one.
			if st := status(t, "GET", r.url+"/late/nix-cache-info", "", nil); st != 401 {
				t.Errorf("%s: a deleted cache: %d, want 404 at once", r.url, st)
			}
		}
	})

	dep, top := buildPair(n, "replicas")
	t.Run("PushOneSubstituteAnother", func(t *testing.T) {
		n.Run("nix", append([]string{"copy", "--to", a.url + "/main?compression=zstd", top}, auth...)...)
		store := filepath.Join(t.TempDir(), "store")
		n.Run("nix", append([]string{"copy", "--from", b.url + "/main", "--to", store, top}, trust...)...)
		for _, p := range []string{dep, top} {
			if n.Run("nix-store", "--dump", p) != n.Run("nix-store", "--dump", filepath.Join(store, p)) {
				t.Errorf("%s substituted through another replica differs", p)
			}
		}
	})

	t.Run("RangesAndMissingBlobs", func(t *testing.T) {
		ctx := context.Background()
		get := func(url, rng string) (int, []byte) {
			req, _ := http.NewRequest("GET", url, nil)
			if rng != "" {
				req.Header.Set("Range", rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("GET %s: the body broke off: %v", url, err)
			}
			return resp.StatusCode, body
		}
		_, info := get(b.url+"/main/"+filepath.Base(top)[:32]+".narinfo", "")
		var key string
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "URL: "); ok {
				key = v
			}
		}
		st, full := get(b.url+"/main/"+key, "")
		if st != 200 || len(full) < 1000 {
			t.Fatalf("NAR %s: %d, %d bytes", key, st, len(full))
		}
		if st, part := get(b.url+"/main/"+key, "bytes=100-899"); st != 206 || !bytes.Equal(part, full[100:900]) {
			t.Errorf("a range of the NAR from S3: %d, %d bytes; want 206 and bytes 100-899", st, len(part))
		}
		// A blob gone from the bucket is a 404 before any byte, never a
		// 200 that ends early.
		if err := s.bucket.Client().RemoveObject(ctx, s.bucket.Name, key, minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, method := range []string{"GET", "HEAD"} {
			if st := status(t, method, c.url+"/main/"+key, "", nil); st != 404 {
				t.Errorf("%s of a NAR missing from the bucket: %d, want 404", method, st)
			}
		}
		// Put it back as silo stores objects (a signed payload hash rather
		// than aws-chunked streaming, whose Content-Encoding versitygw keeps).
		if _, err := s.bucket.Client().PutObject(ctx, s.bucket.Name, key, bytes.NewReader(full), int64(len(full)), minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("RedirectToPresigned", func(t *testing.T) {
		// A replica that answers NAR downloads with presigned URLs; Nix
		// follows them to the S3 server and verifies what it gets.
		old := s.flags
		s.flags = []string{"--db", s.db, "--blobs", s.bucket.URL() + "&redirect-ttl=1m"}
		r := s.replica()
		s.flags = old
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Get(r.url + "/main/" + filepath.Base(top)[:32] + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		info, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("narinfo from the redirecting replica: %s (narinfos always come from the server)", resp.Status)
		}
		var key string
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "URL: "); ok {
				key = v
			}
		}
		resp, err = noFollow.Get(r.url + "/main/" + key)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, s.bucket.Endpoint+"/") || !strings.Contains(loc, "X-Amz-Signature=") {
			t.Errorf("NAR from the redirecting replica: %s to %q, want 307 to a presigned URL of the S3 server", resp.Status, loc)
		}
		resp, err = http.Get(r.url + "/main/" + key)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ce := resp.Header.Get("Content-Encoding"); resp.StatusCode != 200 || ce != "" {
			t.Errorf("the presigned URL answers %s with Content-Encoding %q, want 200 and none (Nix would try to decode it)", resp.Status, ce)
		}
		store := filepath.Join(t.TempDir(), "store")
		n.Run("nix", append([]string{"copy", "--from", r.url + "/main", "--to", store, top}, trust...)...)
		if n.Run("nix-store", "--dump", top) != n.Run("nix-store", "--dump", filepath.Join(store, top)) {
			t.Errorf("%s substituted through presigned URLs differs", top)
		}
	})

	t.Run("RevokedAtOnceEverywhere", func(t *testing.T) {
		s.silo("cache", "create", "priv")
		n.Run("nix", append([]string{"copy", "--to", a.url + "/priv?compression=zstd", top}, auth...)...)
		pull := strings.TrimSpace(s.silo("token", "create", "--cache", "priv", "--pull"))
		narinfo := "/priv/" + filepath.Base(top)[:32] + ".narinfo"
		for _, r := range replicas {
			// Twice: the second answer comes from what the replica remembers.
			for range 2 {
				if st := status(t, "GET", r.url+narinfo, pull, nil); st != 200 {
					t.Fatalf("%s with a valid token: %d", r.url, st)
				}
			}
		}
		s.silo("token", "revoke", pull) // a whole token names its ID
		for _, r := range replicas {
			if st := status(t, "GET", r.url+narinfo, pull, nil); st != 401 {
				t.Errorf("%s right after the revocation: %d, want 401", r.url, st)
			}
		}
	})

	t.Run("ConcurrentPushesWhileCollecting", func(t *testing.T) {
		// Eight closures sharing four dependencies. Their NARs are stored
		// first in a scratch cache that is then deleted, so that they are
		// garbage the collector (on whichever replica holds the lease)
		// removes and deletes while eight nix copy push the closures to
		// main through the three replicas; meanwhile the scratch cache
		// keeps receiving paths and being deleted.
		var shared []string
		for i := range 4 {
			shared = append(shared, n.Build(fmt.Sprintf("shared-%d", i), fmt.Sprintf("PATH=/bin:/usr/bin; head -c %d /dev/urandom > $out", 20000+i*70000)))
		}
		var tops []string
		for i := range 8 {
			tops = append(tops, n.Build(fmt.Sprintf("top-%d", i), "PATH=/bin:/usr/bin; echo $dep0 $dep1 > $out; head -c 100000 /dev/urandom >> $out",
				shared[i%4], shared[(i+1)%4]))
		}
		garbage := n.Build("garbage", "PATH=/bin:/usr/bin; head -c 50000 /dev/urandom > $out")
		// Each Nix process has a cache directory of its own (Nix 2.8's
		// narinfo disk cache fails under concurrent writers) and Nix's
		// default negative TTL: with 0, nix copy 2.8 re-checks each path
		// before its upload, and one that another push stored meanwhile
		// makes it drain the stream of all its paths ("coroutine has
		// finished"), whatever the server.
		pusher := func() *nixtest.Nix {
			p := nixtest.Require(t)
			p.Extra = "narinfo-cache-negative-ttl = 3600\n"
			return p
		}
		scratch := func(p *nixtest.Nix, r *server, paths ...string) {
			s.silo("cache", "create", "scratch", "--public")
			if _, err := p.Try("nix", append(append([]string{"copy", "--to", r.url + "/scratch?compression=zstd"}, paths...), auth...)...); err != nil {
				t.Errorf("nix copy to the scratch cache: %v", err)
			}
			s.silo("cache", "delete", "--yes", "scratch")
		}
		scratch(pusher(), a, append(tops, garbage)...)
		stop := make(chan struct{})
		churned := make(chan int)
		churner := pusher()
		go func() {
			rounds := 0
			defer func() { churned <- rounds }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				scratch(churner, replicas[rounds%3], tops[rounds%8], garbage)
				rounds++
			}
		}()
		var wg sync.WaitGroup
		for i, p := range tops {
			wg.Add(1)
			pusher := pusher()
			go func() {
				defer wg.Done()
				r := replicas[i%3]
				if _, err := pusher.Try("nix", append([]string{"copy", "--to", r.url + "/main?compression=zstd", p}, auth...)...); err != nil {
					t.Errorf("nix copy of closure %d through %s: %v", i, r.url, err)
				}
			}()
		}
		wg.Wait()
		close(stop)
		t.Logf("the scratch cache was filled and deleted %d more times meanwhile", <-churned)
		// Let the collector and the reaper run past the grace period.
		time.Sleep(2500 * time.Millisecond)
		for i, r := range replicas {
			store := filepath.Join(t.TempDir(), "store")
			n.Run("nix", append([]string{"copy", "--from", r.url + "/main", "--to", store}, append(trust, tops...)...)...)
			for _, p := range append(tops[i:i+1], shared...) {
				if n.Run("nix-store", "--dump", p) != n.Run("nix-store", "--dump", filepath.Join(store, p)) {
					t.Errorf("%s substituted after the collections differs", p)
				}
			}
		}
		logs := a.logs() + b.logs() + c.logs()
		for _, want := range []string{"garbage collected", "collected blobs deleted after their grace period"} {
			if !strings.Contains(logs, want) {
				t.Errorf("no replica logged %q: the test did not collect while pushing", want)
			}
		}
	})

	t.Run("KilledMidUpload", func(t *testing.T) {
		ctx := context.Background()
		core := s.bucket.Core()
		objects := func() (visible, temporary int) {
			for o := range core.Client.ListObjects(ctx, s.bucket.Name, minio.ListObjectsOptions{Recursive: true}) {
				if strings.HasPrefix(o.Key, ".uploads/") {
					temporary++
				} else {
					visible++
				}
			}
			return
		}
		uploads := func() int {
			res, err := core.ListMultipartUploads(ctx, s.bucket.Name, "", "", "", "", 1000)
			if err != nil {
				t.Fatal(err)
			}
			return len(res.Uploads)
		}
		before, _ := objects()
		d := s.replica("--compression", "none", "--gc-interval", "1h")
		body, url := bigNAR(t, 40<<20)
		pr, pw := io.Pipe()
		go func() {
			pw.Write(body[:36<<20]) // more than two parts, then nothing
		}()
		req, _ := http.NewRequest("PUT", d.url+"/main/"+url, pr)
		req.SetBasicAuth("", pushTok)
		go http.DefaultClient.Do(req)
		deadline := time.Now().Add(30 * time.Second)
		for uploads() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no multipart upload started:\n%s", d.logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
		d.cmd.Process.Signal(syscall.SIGKILL)
		d.cmd.Wait()
		pw.Close()
		if after, _ := objects(); after != before {
			t.Errorf("the killed upload left %d visible objects", after-before)
		}
		for _, r := range replicas {
			if st := status(t, "HEAD", r.url+"/main/"+url, "", nil); st != 404 {
				t.Errorf("%s: the killed upload's NAR answers %d, want 404", r.url, st)
			}
		}
		// A live replica's sweep aborts it once it made no progress for
		// --multipart-idle.
		deadline = time.Now().Add(30 * time.Second)
		for uploads() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the killed replica's multipart upload was not swept:\n%s", a.logs())
			}
			time.Sleep(200 * time.Millisecond)
		}
		if _, tmp := objects(); tmp != 0 {
			t.Errorf("%d temporary objects left", tmp)
		}
		conn, err := pgx.Connect(ctx, s.db)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var recorded int
		conn.QueryRow(ctx, `SELECT count(*) FROM multipart_uploads`).Scan(&recorded)
		if recorded != 0 {
			t.Errorf("%d multipart uploads still recorded", recorded)
		}
	})
}

// buildPair builds a dependency and a path referring to it.
func buildPair(n *nixtest.Nix, name string) (dep, top string) {
	dep = n.Build(name+"-dep", `echo dependency > $out`)
	top = n.Build(name+"-top", `PATH=/bin:/usr/bin
mkdir -p $out/share
echo $dep0 > $out/share/ref
head -c 300000 /dev/urandom > $out/share/blob`, dep)
	return dep, top
}
