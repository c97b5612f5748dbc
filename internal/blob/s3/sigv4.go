package s3

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"time"
)

// getSigner signs the GETs of rawGetter with AWS Signature Version 4,
// keeping the day's signing key: minio-go's signer derives it (four
// HMACs) and canonicalises every header for each request, which was the
// biggest cost of serving a small NAR. Only host and the x-amz headers
// are signed, as S3 requires; Range and If-Match need not be.
type getSigner struct {
	region string
	mu     sync.Mutex
	day    string // YYYYMMDD of key
	secret string
	key    []byte
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func (g *getSigner) signingKey(day, secret string) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.day != day || g.secret != secret {
		k := hmacSHA256([]byte("AWS4"+secret), day)
		k = hmacSHA256(k, g.region)
		k = hmacSHA256(k, "s3")
		g.key, g.day, g.secret = hmacSHA256(k, "aws4_request"), day, secret
	}
	return g.key
}

// headers returns the X-Amz-* and Authorization header lines (each ending
// in CRLF) for a GET of path (already escaped) on host at now.
func (g *getSigner) headers(host, path, accessKey, secret, token string, now time.Time) string {
	stamp := now.UTC().Format("20060102T150405Z")
	day := stamp[:8]
	var canon strings.Builder
	canon.WriteString("GET\n" + path + "\n\nhost:" + host + "\nx-amz-content-sha256:" + emptySHA256 + "\nx-amz-date:" + stamp + "\n")
	signed := "host;x-amz-content-sha256;x-amz-date"
	if token != "" {
		canon.WriteString("x-amz-security-token:" + token + "\n")
		signed += ";x-amz-security-token"
	}
	canon.WriteString("\n" + signed + "\n" + emptySHA256)
	sum := sha256.Sum256([]byte(canon.String()))
	scope := day + "/" + g.region + "/s3/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + stamp + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	sig := hex.EncodeToString(hmacSHA256(g.signingKey(day, secret), toSign))
	out := "X-Amz-Date: " + stamp + "\r\nX-Amz-Content-Sha256: " + emptySHA256 + "\r\n"
	if token != "" {
		out += "X-Amz-Security-Token: " + token + "\r\n"
	}
	return out + "Authorization: AWS4-HMAC-SHA256 Credential=" + accessKey + "/" + scope +
		", SignedHeaders=" + signed + ", Signature=" + sig + "\r\n"
}
