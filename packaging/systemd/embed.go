// Package systemd holds silo's plain systemd units for machines without
// NixOS, with the post-build-hook and admin wrappers and config templates.
// nix/gen-units.sh writes the silo-* files from the NixOS module's own
// renderer (nix/units.nix), so they are the text the module installs;
// internal/units installs them (silo install-units).
package systemd

import "embed"

// Files holds silo-* (units and wrappers) and config/*.toml.
//
//go:embed silo-* config/*.toml
var Files embed.FS
