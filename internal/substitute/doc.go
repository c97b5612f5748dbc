// Package substitute substitutes store paths from binary caches into a
// local Nix store, as Nix 2.8's daemon does (PathSubstitutionGoal,
// getDefaultSubstituters, BinaryCacheStore): http(s) caches (silo's
// included) and file:// caches, with Nix's settings, messages, errors and
// activities.
//
// # Using it
//
// A daemon makes one Pool (narinfo cache, HTTP connections, in-flight
// downloads shared by all connections) and, per client connection, one
// Session over that connection's store and log channel. Before each
// operation it gives the Session the connection's current Config
// (Configure): settings such as fallback, substitute, netrc-file and
// connect-timeout apply from then on. The substituters, their order and
// the trusted keys are taken from the Config at the Session's first use
// and kept for its lifetime, as Nix builds its substituter list once per
// daemon process, that is per connection.
//
//   - QuerySubstitutablePathInfos, QuerySubstitutablePaths: what the
//     caches have (ops 30, 32; QueryMissing).
//   - Realise: make paths valid by substitution, each path's references
//     first (the whole closure, in dependency order, several at a time).
//     Callers never order references themselves; a scheduler that builds
//     calls Realise for the paths it wants and looks at each Result's
//     Status to decide whether to build (see Decide).
//   - QueryRealisation: the hook for content-addressed derivations
//     (realisations/<id>.doi).
//
// # Invariants
//
//   - Nothing becomes valid unless it is verified: the narinfo's signature
//     is checked before the download (an untrusted substitute is skipped
//     with Nix's warning and the next cache is tried), and the NAR streams
//     from the cache through the decompressor into the store's
//     AddToStoreNar, which checks the NAR hash, size and content address
//     while restoring and checks the signature again; a truncated or
//     corrupted NAR leaves the path invalid and nothing in the store.
//   - NARs stream: no NAR is held in memory; a download's memory is the
//     decompressor's window plus fixed buffers. At most Pool.Jobs
//     downloads run at once in a daemon.
//   - A path's references are valid before the path is added (the store
//     refuses it otherwise): Realise starts a path's download only when
//     every reference other than itself is valid.
//   - Every byte from a cache is hostile: narinfos are parsed strictly
//     and must name the path asked for; NAR URLs of file:// caches stay
//     inside the cache directory and name regular files; an http cache
//     may point only at http(s) URLs; references that form a cycle fail
//     instead of waiting forever.
//   - Every request has deadlines: connect-timeout for connecting (curl's
//     300 s when 0) and stalled-download-timeout for every wait on the
//     server; transient failures are retried download-attempts times,
//     resuming a NAR at its offset when the server accepts ranges.
//   - The narinfo cache is in memory, per daemon, keyed by cache URL,
//     store directory, netrc file and hash part, bounded in size, and
//     answers within narinfo-cache-positive-ttl / -negative-ttl of the
//     asking connection. Nix's on-disk cache (~/.cache/nix) is not used:
//     a daemon restart forgets everything, and there are no stale
//     entries shared with clients.
//   - Two connections substituting the same path download it once: the
//     second waits for the first and then finds the path valid (or tries
//     itself if the first failed).
package substitute
