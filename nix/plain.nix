# The plain systemd units in packaging/systemd, for machines without NixOS:
# module.nix evaluated (with minilib.nix) for a machine where silo is
# /usr/local/bin/silo, the Nix client is in /usr/bin (Debian's nix-bin),
# nix.conf is /etc/nix/nix.conf and silo's config files are in /etc/silo.
# gen-units.sh writes the result; internal/units' tests check it is current.
let
  lib = import ./minilib.nix;
  render = import ./units.nix;
  eval = lib.evalModules {
    modules = [ lib.nixosStub ./module.nix {
      nix.enable = false;
      services.silo = {
        serve = { enable = true; configFile = "/etc/silo/serve.toml"; };
        publish = {
          enable = true;
          configFile = "/etc/silo/publish.toml";
          secrets.signing-key-file = [ "/etc/silo/publish-key.sec" ];
        };
        queue = {
          enable = true;
          configFile = "/etc/silo/queue.toml";
          secrets.netrc-file = "/etc/silo/queue.netrc";
        };
        daemon = { enable = true; nixConfDir = "/etc/nix"; };
        gc.enable = true;
      };
    } ];
    specialArgs.pkgs = import ./testpkgs.nix { };
  };
  cfg = eval.config.services.silo;
in
builtins.mapAttrs (_: u: u.text) eval.config.systemd.units // {
  "silo-post-build-hook" = render.hook { silo = cfg.package; shell = "/bin/sh"; socket = cfg.queue.socket; };
  "silo-serve-admin" = "#!/bin/sh\n" + render.admin { silo = cfg.package; user = cfg.serve.user; configFile = cfg.serve.configFile; };
}
