# silo's settings, command by command, as the NixOS module declares them:
# settings.<flag> (rendered to the TOML file given with --config; keys are
# flag names), secrets.<flag> (files passed by systemd's LoadCredential)
# and unit (flags the units set themselves). internal/units' tests check
# this table against `silo COMMAND --help`, so a new flag needs a line here.
{ lib }:
let
  t = lib.types;
  duration = t.str; # Go durations: "90s", "10m", "24h"
  size = t.either t.int t.str; # 1048576, "512M", "20G"
  logLevel = t.enum [ "debug" "info" "warn" "error" ];
in
{
  serve = {
    unit = [ "listen" "data-dir" "config" ];
    secrets = { };
    settings = {
      url = [ t.str "public base URL of the server, for the substituter lines `silo cache info` prints" ];
      compression = [ (t.enum [ "zstd" "xz" "none" ]) "how NARs are stored and served" ];
      compression-level = [ t.int "compression level (0: the method's default; zstd 1-22, xz 1-9)" ];
      max-nar-size = [ size "largest NAR file accepted, e.g. \"20G\" (0: no limit)" ];
      max-uploads = [ t.int "NAR uploads verified at once; more wait (0: 4 per CPU)" ];
      upload-idle-timeout = [ duration "cut off an upload whose client sends nothing for this long" ];
      require-closure = [ t.bool "refuse a narinfo whose references are not already in the cache" ];
      upload-ttl = [ duration "how long a verified NAR upload waits for its narinfo" ];
      gc-interval = [ duration "how often unused NARs and expired uploads are deleted" ];
      shutdown-timeout = [ duration "how long in-flight requests may finish on SIGTERM" ];
      log-level = [ logLevel "log level (requests at info, narinfo lookups at debug)" ];
      log-format = [ (t.enum [ "text" "json" ]) "log format" ];
    };
  };

  publish = {
    unit = [ "listen" "config" "token-data-dir" ];
    secrets = {
      signing-key-file = [ true "secret key files to sign narinfos with (nix-store --generate-binary-cache-key)" ];
    };
    settings = {
      store-dir = [ t.str "the Nix store directory to serve" ];
      compression = [ (t.enum [ "none" "zstd" ]) "NARs advertised in narinfos: plain, or zstd compressed on the fly" ];
      priority = [ t.int "priority advertised in nix-cache-info (lower is preferred by clients)" ];
      log-dir = [ t.str "Nix's log directory, for build logs" ];
      db = [ t.str "read this Nix database file directly instead of asking the store daemon" ];
      max-streams = [ t.int "NARs dumped at once at most; more requests wait" ];
      token-cache = [ t.str "with tokens from silo serve: the cache name tokens must grant pull on" ];
    };
  };

  queue = {
    unit = [ "socket" "state" "config" "json" ];
    secrets = {
      signing-key-file = [ false "secret key file to sign each narinfo with" ];
      netrc-file = [ false "netrc file with the credentials (upload token) for the cache" ];
    };
    settings = {
      to = [ t.str "the cache: a URL (http://, https://, file:///DIR)" ];
      store-dir = [ t.str "the local Nix store directory" ];
      skip-signed-by = [ t.str "do not push paths validly signed by one of these public keys (space-separated; \"none\" pushes everything)" ];
      jobs = [ t.int "upload at most this many paths at once" ];
      tmp-dir = [ t.str "directory for NARs too big to buffer in memory while they upload" ];
      compression = [ (t.enum [ "zstd" "none" ]) "how NARs are compressed for upload" ];
      compression-level = [ t.int "zstd level, 1 (fastest) to 22 (smallest)" ];
      min-backoff = [ duration "first retry delay after a failed upload" ];
      max-backoff = [ duration "longest retry delay" ];
    };
  };
}
