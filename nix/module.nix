# NixOS module for silo: services.silo.serve (binary cache), .publish (this
# machine's store), .queue (uploads fed by the post-build hook), .daemon
# (silo in place of nix-daemon) and .gc (store garbage collection on a
# timer). Unit text comes from units.nix, the same text packaging/systemd
# holds for machines without NixOS.
#
# It uses few library functions (options, types, mkIf/mkMerge/mkDefault)
# so that it also evaluates with minilib.nix under Nix 2.8 without nixpkgs:
# that is how the tests and gen-units.sh run it.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge mkDefault types literalExpression;
  inherit (builtins) attrNames concatLists elemAt filter genList isList length listToAttrs map substring;
  cfg = config.services.silo;
  render = import ./units.nix;
  formats = import ./formats.nix;
  flags = import ./flags.nix { inherit lib; };

  opt = type: default: description: mkOption { inherit type default description; };
  settingValue = types.oneOf [ types.bool types.int types.str (types.listOf (types.either types.int types.str)) ];

  # settings.<flag>: the flags of flags.nix, typed, null meaning silo's own
  # default; any other flag name (a newer silo's) is accepted as well.
  settingsOption = cmd: opt
    (types.submodule {
      freeformType = types.attrsOf settingValue;
      options = builtins.mapAttrs (flag: d: opt (types.nullOr (elemAt d 0)) null
        "silo ${cmd} --${flag}: ${elemAt d 1}. null: silo's default.") flags.${cmd}.settings;
    })
    { }
    "Settings of silo ${cmd}, written to the TOML file it reads with --config (keys are flag names, see silo ${cmd} --help).";

  # secrets.<flag>: files for silo's *-file flags, handed over with
  # LoadCredential, so the service reads them without access to their path.
  secretsOption = cmd: opt
    (types.submodule {
      freeformType = types.attrsOf (types.either types.str (types.listOf types.str));
      options = builtins.mapAttrs (flag: d:
        if elemAt d 0 then opt (types.listOf types.str) [ ] "silo ${cmd} --${flag} (repeatable): ${elemAt d 1}."
        else opt (types.nullOr types.str) null "silo ${cmd} --${flag}: ${elemAt d 1}.") flags.${cmd}.secrets;
    })
    { }
    "Secret files of silo ${cmd} by flag name; keep them out of the Nix store, which every user can read.";

  secretList = s: concatLists (map (flag:
    let v = s.${flag}; in
    if v == null then [ ]
    else if isList v then genList (i: { inherit flag; id = "${flag}-${toString i}"; path = elemAt v i; }) (length v)
    else [ { inherit flag; id = flag; path = v; } ]) (attrNames s));

  setSettings = s: filter (k: s.${k} != null) (attrNames s);
  configFileOf = cmd: c:
    if c.configFile != null then c.configFile
    else "${pkgs.writeText "silo-${cmd}.toml" (formats.toTOML c.settings)}";

  # Options every socket-activated server has.
  serverOptions = cmd: defaultListen: defaultUser: {
    enable = mkEnableOption "silo ${cmd}";
    listen = opt (types.listOf types.str) [ defaultListen ]
      "Addresses the socket unit listens on: host:port, [::]:port, or unix:/path for a reverse proxy.";
    socketMode = opt types.str "0666" "Mode of unix sockets in listen.";
    socketUser = opt (types.nullOr types.str) null "Owner of unix sockets in listen.";
    socketGroup = opt (types.nullOr types.str) null "Group of unix sockets in listen (e.g. nginx, with socketMode 0660).";
    privateNetwork = opt types.bool true
      "Run without a network of its own (only the activated sockets and unix sockets). Turn off when silo must reach other hosts (S3, PostgreSQL, upstream caches).";
    user = opt types.str defaultUser "Name of the service's dynamic user.";
    settings = settingsOption cmd;
    secrets = secretsOption cmd;
    configFile = opt (types.nullOr types.str) null "Use this TOML file instead of one written from settings.";
    extraArgs = opt (types.listOf types.str) [ ] "Extra command-line arguments.";
  };
  serverArgs = cmd: c: {
    inherit (c) listen socketMode socketUser socketGroup privateNetwork user extraArgs;
    configFile = configFileOf cmd c;
    secrets = secretList c.secrets;
  };

  machineOptions = {
    hostName = mkOption { type = types.str; description = "Host name of the remote builder."; };
    protocol = opt (types.enum [ "ssh" "ssh-ng" ]) "ssh" "Store protocol of the builder.";
    sshUser = opt (types.nullOr types.str) null "User to log in as.";
    sshKey = opt (types.nullOr types.str) null "Private SSH key file.";
    systems = opt (types.listOf types.str) [ ] "Systems it builds for (\"x86_64-linux\").";
    maxJobs = opt types.int 1 "Builds it runs at once.";
    speedFactor = opt types.int 1 "Relative speed; faster machines are preferred.";
    supportedFeatures = opt (types.listOf types.str) [ ] "System features it supports (kvm, big-parallel).";
    mandatoryFeatures = opt (types.listOf types.str) [ ] "Features a derivation must require to be built there.";
    publicHostKey = opt (types.nullOr types.str) null "Base64 of its SSH host key.";
  };

  d = cfg.daemon;
  nixConfDir = if d.nixConfDir != null then d.nixConfDir
    else "${pkgs.writeTextDir "nix.conf" (formats.nixConf d.settings + d.extraOptions)}";
  hookScript = pkgs.writeScript "silo-post-build-hook"
    (render.hook { silo = cfg.package; shell = pkgs.runtimeShell; socket = cfg.queue.socket; });

  units = render.units {
    silo = cfg.package;
    nix = cfg.nixPackage;
    serve = if cfg.serve.enable then serverArgs "serve" cfg.serve else null;
    publish = if cfg.publish.enable then serverArgs "publish" cfg.publish // {
      inherit (cfg.publish) supplementaryGroups;
      serveTokens = cfg.publish.tokensFromServe;
      user = if cfg.publish.tokensFromServe then cfg.serve.user else cfg.publish.user;
    } else null;
    queue = if cfg.queue.enable then {
      inherit (cfg.queue) socket extraArgs;
      configFile = configFileOf "queue" cfg.queue;
      secrets = secretList cfg.queue.secrets;
    } else null;
    daemon = if d.enable then { inherit (d) socket extraArgs; inherit nixConfDir; } else null;
    gc = if cfg.gc.enable then { inherit (cfg.gc) dates persistent randomizedDelaySec options; } else null;
  };
  wantedBy = name:
    let ext = n: substring (builtins.stringLength name - n) n name; in
    if ext 7 == ".socket" then [ "sockets.target" ] else if ext 6 == ".timer" then [ "timers.target" ] else [ ];
  notInStore = p: substring 0 11 p != "/nix/store/";
  anyEnabled = cfg.serve.enable || cfg.publish.enable || cfg.queue.enable || d.enable || cfg.gc.enable;
in
{
  options.services.silo = {
    package = mkOption {
      type = types.package;
      default = pkgs.silo;
      defaultText = literalExpression "pkgs.silo";
      description = "The silo package.";
    };
    nixPackage = mkOption {
      type = types.package;
      default = pkgs.nix;
      defaultText = literalExpression "pkgs.nix";
      description = "The Nix client: nix-collect-garbage for gc, and the nix commands when silo is the daemon.";
    };

    serve = serverOptions "serve" "127.0.0.1:8080" "silo";

    publish = serverOptions "publish" "[::]:5000" "silo-publish" // {
      supplementaryGroups = opt (types.listOf types.str) [ ]
        "Groups to join, e.g. one that may open the daemon's socket where its directory is not world-readable.";
      tokensFromServe = opt types.bool false
        "Make the store private: require tokens made with silo token create --cache <token-cache> --pull, read from silo serve's data directory (runs as serve's user).";
    };

    queue = {
      enable = mkEnableOption "silo queue, uploading what Nix builds to a cache";
      socket = opt types.str "/var/lib/silo/queue.sock"
        "Unix socket of the queue; the hook's spool for times the queue is down is SOCKET.spool.";
      hook.enable = opt types.bool true
        "Set Nix's post-build-hook to a wrapper that hands every build's outputs to the queue and never fails a build.";
      hook.path = mkOption {
        type = types.str;
        readOnly = true;
        default = "${hookScript}";
        description = "The post-build-hook wrapper (for wiring it by hand).";
      };
      settings = settingsOption "queue";
      secrets = secretsOption "queue";
      configFile = opt (types.nullOr types.str) null "Use this TOML file instead of one written from settings.";
      extraArgs = opt (types.listOf types.str) [ ] "Extra command-line arguments.";
    };

    daemon = {
      enable = mkEnableOption "silo daemon in place of nix-daemon (sets nix.enable = false and does its work: nix.conf, build users, machines)";
      socket = opt types.str "/nix/var/nix/daemon-socket/socket" "The daemon's socket.";
      nixConfDir = opt (types.nullOr types.str) null
        "Directory with the nix.conf the daemon reads (NIX_CONF_DIR); null: one written from settings, also installed as /etc/nix/nix.conf.";
      settings = opt
        (types.submodule {
          freeformType = types.attrsOf (types.nullOr settingValue);
          options = {
            build-users-group = opt types.str "nixbld" "Group whose members build (see nrBuildUsers).";
            sandbox = opt (types.either types.bool (types.enum [ "relaxed" ])) true "Build in a sandbox.";
            substituters = opt (types.listOf types.str) [ "https://cache.nixos.org/" ] "Binary caches to substitute from.";
            trusted-public-keys = opt (types.listOf types.str) [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ] "Keys whose signatures are trusted.";
            trusted-users = opt (types.listOf types.str) [ "root" ] "Users (and @groups) the daemon trusts.";
            allowed-users = opt (types.listOf types.str) [ "*" ] "Users (and @groups) who may connect.";
            max-jobs = opt (types.either types.int (types.enum [ "auto" ])) "auto" "Builds at once.";
            cores = opt types.int 0 "Cores per build (0: all).";
            require-sigs = opt types.bool true "Refuse unsigned paths from untrusted sources.";
            builders = opt (types.nullOr types.str) (if d.buildMachines == [ ] then null else "@/etc/nix/machines") "Remote builders (default: buildMachines).";
            post-build-hook = opt (types.nullOr types.str) null "Program run after each build (set by queue.hook).";
          };
        })
        { }
        "nix.conf settings (as nix.settings), read by silo daemon and by the Nix client.";
      extraOptions = opt types.lines "" "Text appended to nix.conf.";
      nrBuildUsers = opt types.int 32 "Build users nixbld1..N in build-users-group.";
      buildMachines = opt (types.listOf (types.submodule { options = machineOptions; })) [ ] "Remote builders, written to /etc/nix/machines.";
      extraArgs = opt (types.listOf types.str) [ ] "Extra command-line arguments of silo daemon.";
    };

    gc = {
      enable = mkEnableOption "Nix store garbage collection on a timer (through the store daemon)";
      dates = opt types.str "03:15" "When to collect (systemd.time OnCalendar).";
      persistent = opt types.bool true "Catch up on a collection missed while the machine was off.";
      randomizedDelaySec = opt types.str "0" "Random delay before each collection (systemd.time span).";
      options = opt (types.listOf types.str) [ ] "Arguments of nix-collect-garbage, e.g. [ \"--delete-older-than\" \"30d\" ].";
    };
  };

  config = mkIf anyEnabled (mkMerge [
    {
      systemd.units = builtins.mapAttrs (name: text: { inherit text; wantedBy = wantedBy name; }) units;
      assertions = map (p: { assertion = notInStore p.path; message = "services.silo: secret ${p.path} is in the Nix store, which every user can read; give a path outside it."; })
        (concatLists (map (c: secretList c.secrets) (filter (c: c.enable) [ cfg.serve cfg.publish cfg.queue ])))
        ++ map (cmd: {
          assertion = cfg.${cmd}.configFile == null || setSettings cfg.${cmd}.settings == [ ];
          message = "services.silo.${cmd}: set either settings or configFile, not both.";
        }) [ "serve" "publish" "queue" ];
    }
    (mkIf cfg.serve.enable {
      # Admin commands (silo cache/token ...) as the server's dynamic user.
      environment.systemPackages = [
        (pkgs.writeShellScriptBin "silo-serve-admin"
          (render.admin { silo = cfg.package; user = cfg.serve.user; configFile = configFileOf "serve" cfg.serve; }))
      ];
    })
    (mkIf cfg.queue.enable {
      assertions = [{
        assertion = cfg.queue.configFile != null || cfg.queue.settings.to != null;
        message = "services.silo.queue.settings.to: name the cache to upload to (a URL).";
      }];
    })
    (mkIf (cfg.queue.enable && cfg.queue.hook.enable && !d.enable) { nix.settings.post-build-hook = cfg.queue.hook.path; })
    (mkIf (cfg.queue.enable && cfg.queue.hook.enable && d.enable) { services.silo.daemon.settings.post-build-hook = cfg.queue.hook.path; })
    (mkIf d.enable {
      nix.enable = mkDefault false;
      assertions = [{
        assertion = !config.nix.enable;
        message = "services.silo.daemon replaces nix-daemon: set nix.enable = false (nix.settings become services.silo.daemon.settings).";
      }];
      environment.systemPackages = [ cfg.nixPackage ];
      environment.etc = (if d.nixConfDir == null then { "nix/nix.conf".source = "${nixConfDir}/nix.conf"; } else { })
        // (if d.buildMachines == [ ] then { } else { "nix/machines".text = formats.machines d.buildMachines; });
      users.groups.${d.settings.build-users-group} = { gid = 30000; };
      users.users = listToAttrs (genList (i: {
        name = "nixbld${toString (i + 1)}";
        value = {
          description = "Nix build user ${toString (i + 1)}";
          uid = 30001 + i;
          isSystemUser = true;
          group = d.settings.build-users-group;
          extraGroups = [ d.settings.build-users-group ];
          home = "/var/empty";
        };
      }) d.nrBuildUsers);
      systemd.tmpfiles.rules = [ "d ${dirOf d.socket} 0755 root root - -" ];
    })
  ]);
}
