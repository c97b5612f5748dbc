package cli

import "github.com/silo-cache/silo/internal/sandbox"

// maybeSandboxInit runs the sandbox's init step when the sandbox package
// re-executed silo as one (silo __sandbox-init); it does not return then.
func maybeSandboxInit(args []string) {
	if len(args) > 0 && args[0] == sandbox.InitCommand {
		sandbox.Init(args[1:])
	}
}
