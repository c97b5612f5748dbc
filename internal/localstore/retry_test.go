package localstore

import (
	"errors"
	"testing"
)

func TestRetryTransient(t *testing.T) {
	malformed := errors.New("database disk image is malformed (11)")
	other := errors.New("no such table: ValidPaths")
	tests := []struct {
		name      string
		fails     int // calls that fail before one succeeds
		err       error
		wantCalls int
		wantErr   error
	}{
		{"succeeds at once", 0, nil, 1, nil},
		{"transient malformed", 2, malformed, 3, nil},
		{"stays malformed", 100, malformed, 8, malformed},
		{"other errors are not retried", 100, other, 1, other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := retryTransient(nil, func() error {
				calls++
				if calls <= tt.fails {
					return tt.err
				}
				return nil
			})
			if err != tt.wantErr || calls != tt.wantCalls {
				t.Errorf("err = %v after %d calls, want %v after %d", err, calls, tt.wantErr, tt.wantCalls)
			}
		})
	}
}
