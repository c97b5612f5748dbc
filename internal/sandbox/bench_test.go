package sandbox

import (
	"os"
	"testing"
)

// BenchmarkRun measures the per-build cost of a trivial /bin/sh build
// (`sh -c :`) run as a build user: on the host, and in the sandbox with
// and without a user namespace. The difference is the sandbox's overhead
// (bench/sandbox.sh compares it with the real Nix's). SILO_INIT=<silo
// binary> makes the init step the real silo binary instead of the test
// binary (bench/sandbox.sh does).
func BenchmarkRun(b *testing.B) {
	e := newEnv(b)
	u := acquire(b, newPool(b, e, 1))
	if bin := os.Getenv("SILO_INIT"); bin != "" {
		copied := e.base + "/silo"
		if err := linkOrCopy(bin, copied); err != nil {
			b.Fatal(err)
		}
		os.Chmod(copied, 0o755)
		old := initBinary
		initBinary = copied
		defer func() { initBinary = old }()
	}
	for _, bc := range []struct {
		name                 string
		sandboxed, nous, net bool
	}{{"plain", false, false, false}, {"sandboxed", true, false, false}, {"sandboxed-no-userns", true, true, false}, {"sandboxed-network", true, false, true}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				s, _ := e.spec(u, ":")
				s.Sandboxed, s.NoUserNamespace, s.Network = bc.sandboxed, bc.nous, bc.net
				if res, log := e.run(s); !res.Success() {
					b.Fatalf("%+v: %s", res, log)
				}
			}
		})
	}
}
