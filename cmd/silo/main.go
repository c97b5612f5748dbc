// Command silo is the store side of Nix in one binary. It only wires:
// every concern lives in a package under internal/.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/silo-cache/silo/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.OSEnv())
	stop()
	os.Exit(code)
}
