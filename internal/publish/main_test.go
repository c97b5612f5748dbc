package publish

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

// TestMain sends the servers' request logs nowhere, unless SILO_TEST_LOG
// is set.
func TestMain(m *testing.M) {
	if os.Getenv("SILO_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	os.Exit(m.Run())
}
