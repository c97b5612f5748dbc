package substitute

import (
	"fmt"

	"github.com/silo-cache/silo/internal/storepath"
)

// Decision is what a derivation goal does once the substitution of its
// outputs was tried (Nix's outputsSubstitutionTried).
type Decision int

const (
	// Done: every wanted output is valid; the goal is Substituted.
	Done Decision = iota + 1
	// Build: some output could not be substituted; build the derivation
	// (after its inputs).
	Build
	// Fail: a cache failed (not merely lacked a path) and --fallback is
	// off: the goal ends with a TransientFailure and the returned error.
	Fail
)

func (d Decision) String() string {
	switch d {
	case Done:
		return "done"
	case Build:
		return "build"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// Decide applies Nix's rule to the Realise results of a derivation's
// wanted outputs: if a substitution failed for another reason than no
// cache having a path (or one of its references), the build fails
// unless fallback; if all outputs are valid, it is done; else it builds.
func Decide(drv storepath.Path, outputs []Result, fallback bool) (Decision, error) {
	failed, noSubs, incomplete := 0, 0, 0
	for _, r := range outputs {
		switch r.Status {
		case AlreadyValid, Substituted:
			continue
		case NoSubstituters:
			noSubs++
		case IncompleteClosure:
			incomplete++
		}
		failed++
	}
	if failed > 0 && failed > noSubs+incomplete && !fallback {
		return Fail, fmt.Errorf("some substitutes for the outputs of derivation '%s' failed (usually happens due to networking issues); try '--fallback' to build derivation from source ", drv)
	}
	if failed == 0 {
		return Done, nil
	}
	return Build, nil
}

// RetryAfterInputs reports Nix's retrySubstitution: some outputs failed
// and every failure was an incomplete closure, so substituting them again
// once the derivation's inputs are built may succeed.
func RetryAfterInputs(outputs []Result) bool {
	incomplete, failed := 0, 0
	for _, r := range outputs {
		if !r.Status.OK() {
			failed++
		}
		if r.Status == IncompleteClosure {
			incomplete++
		}
	}
	return incomplete > 0 && incomplete == failed
}
