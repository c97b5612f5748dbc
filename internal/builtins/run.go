package builtins

import (
	"context"
	"fmt"
	"strings"
)

// Run runs the builtin builder named by a derivation's builder
// ("builtin:fetchurl", "builtin:buildenv", "builtin:unpack-channel") on its
// (rewritten) environment.
func Run(ctx context.Context, builder string, env map[string]string, o FetchOptions, warn Warner) error {
	switch builder {
	case "builtin:fetchurl":
		return Fetchurl(ctx, env, o)
	case "builtin:buildenv":
		return Buildenv(env, warn)
	case "builtin:unpack-channel":
		return UnpackChannel(env)
	}
	return fmt.Errorf("unsupported builtin builder '%s'", strings.TrimPrefix(builder, "builtin:"))
}
