// Package readmetest runs the commands of README.md, in order, as root on
// a scratch machine: private mount, network and PID namespaces in which
// /etc, /var/lib and /usr/local/bin are overlays whose writes go to a
// temporary directory, HOME is empty, and nix-daemon runs as systemd would
// start it (systemd's PATH, Debian's nix.conf). The machine's own files
// are never changed; every process started dies with the namespace.
package readmetest
