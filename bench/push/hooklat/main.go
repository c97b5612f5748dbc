// Command hooklat runs a post-build-hook program N times, as Nix does
// (no arguments, OUT_PATHS and DRV_PATH in the environment), and prints
// latency percentiles of each run from fork to exit.
//
//	hooklat -n 1000 -label queue-up -out /nix/store/... /etc/nix/silo-hook
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"time"
)

func main() {
	n := flag.Int("n", 1000, "invocations")
	out := flag.String("out", "", "OUT_PATHS value")
	drv := flag.String("drv", "", "DRV_PATH value")
	label := flag.String("label", "hook", "label printed with the results")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: hooklat [-n N] [-out PATHS] [-drv DRV] [-label L] HOOK")
		os.Exit(2)
	}
	env := append(os.Environ(), "OUT_PATHS="+*out, "DRV_PATH="+*drv)
	lat := make([]time.Duration, 0, *n)
	failed := 0
	for range *n {
		cmd := exec.Command(flag.Arg(0))
		cmd.Env = env
		t0 := time.Now()
		err := cmd.Run()
		lat = append(lat, time.Since(t0))
		if err != nil {
			failed++
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	fmt.Printf("%s n=%d failed=%d p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f\n",
		*label, len(lat), failed, pct(0.50), pct(0.90), pct(0.99), pct(1))
	if failed > 0 {
		os.Exit(1)
	}
}
