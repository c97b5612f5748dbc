package cli

import (
	"testing"
	"time"
)

func TestParseLifetime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90d", 90 * 24 * time.Hour, true},
		{"12h", 12 * time.Hour, true},
		{"30m", 30 * time.Minute, true},
		{"0d", 0, false},
		{"-1h", 0, false},
		{"soon", 0, false},
		{"d", 0, false},
	}
	for _, tt := range tests {
		got, err := parseLifetime(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseLifetime(%q) = %v, %v; want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true},
		{"512M", 512 << 20, true},
		{"20G", 20 << 30, true},
		{"1t", 1 << 40, true},
		{"10KB", 10 << 10, true},
		{"0", 0, true},
		{"lots", 0, false},
		{"-5", 0, false},
	}
	for _, tt := range tests {
		var b byteSize
		err := b.Set(tt.in)
		if (err == nil) != tt.ok || tt.ok && int64(b) != tt.want {
			t.Errorf("byteSize.Set(%q) = %d, %v; want %d (ok %v)", tt.in, b, err, tt.want, tt.ok)
		}
	}
}
