// Package worker speaks the client side of Nix's worker protocol, the
// protocol nix-daemon serves on its unix socket (Nix 2.8: protocol 1.34).
//
// It holds the protocol's vocabulary (magics, operation numbers, log
// channel messages), its wire encoding (8-byte little-endian integers,
// strings padded to 8 bytes), and a Client implementing the handshake and
// the read-only queries silo needs. Store paths and hashes cross this
// package as the strings the daemon sends; typing them is the caller's job.
//
// Invariant: every reply is preceded by the log channel, which the client
// drains (STDERR_NEXT, activities, results) up to STDERR_LAST or
// STDERR_ERROR before reading the reply. A Client runs one operation at a
// time; any error other than "path not valid" poisons it (the stream
// position is lost, or the daemon hangs up), and its owner dials again.
package worker

import "strconv"

// Magic numbers of the handshake.
const (
	Magic1 = 0x6e697863 // client → daemon, "cxin"
	Magic2 = 0x6478696f // daemon → client, "oixd"
)

// ProtocolVersion is the version this client speaks: major 1, minor 34
// (Nix 2.8). The daemon and client each use the smaller minor.
const ProtocolVersion = 1<<8 | 34

// minMinor is the oldest daemon protocol minor this client accepts
// (Nix 2.0 speaks 1.20; older daemons predate the formats used here).
const minMinor = 20

// Major returns the major part of a protocol version.
func Major(v uint64) uint64 { return v & 0xff00 }

// Minor returns the minor part of a protocol version.
func Minor(v uint64) uint64 { return v & 0x00ff }

// Op is a worker operation number.
type Op uint64

// Operations (worker-protocol.hh). Client implements a few; package
// daemon serves them all.
const (
	OpIsValidPath                 Op = 1
	OpHasSubstitutes              Op = 3
	OpQueryPathHash               Op = 4
	OpQueryReferences             Op = 5
	OpQueryReferrers              Op = 6
	OpAddToStore                  Op = 7
	OpAddTextToStore              Op = 8
	OpBuildPaths                  Op = 9
	OpEnsurePath                  Op = 10
	OpAddTempRoot                 Op = 11
	OpAddIndirectRoot             Op = 12
	OpSyncWithGC                  Op = 13
	OpFindRoots                   Op = 14
	OpExportPath                  Op = 16
	OpQueryDeriver                Op = 18
	OpSetOptions                  Op = 19
	OpCollectGarbage              Op = 20
	OpQuerySubstitutablePathInfo  Op = 21
	OpQueryDerivationOutputs      Op = 22
	OpQueryAllValidPaths          Op = 23
	OpQueryPathInfo               Op = 26
	OpImportPaths                 Op = 27
	OpQueryDerivationOutputNames  Op = 28
	OpQueryPathFromHashPart       Op = 29
	OpQuerySubstitutablePathInfos Op = 30
	OpQueryValidPaths             Op = 31
	OpQuerySubstitutablePaths     Op = 32
	OpQueryValidDerivers          Op = 33
	OpOptimiseStore               Op = 34
	OpVerifyStore                 Op = 35
	OpBuildDerivation             Op = 36
	OpAddSignatures               Op = 37
	OpNarFromPath                 Op = 38
	OpAddToStoreNar               Op = 39
	OpQueryMissing                Op = 40
	OpQueryDerivationOutputMap    Op = 41
	OpRegisterDrvOutput           Op = 42
	OpQueryRealisation            Op = 43
	OpAddMultipleToStore          Op = 44
	OpAddBuildLog                 Op = 45
	OpBuildPathsWithResults       Op = 46
)

var opNames = map[Op]string{
	OpIsValidPath: "IsValidPath", OpHasSubstitutes: "HasSubstitutes", OpQueryPathHash: "QueryPathHash",
	OpQueryReferences: "QueryReferences", OpQueryReferrers: "QueryReferrers", OpAddToStore: "AddToStore",
	OpAddTextToStore: "AddTextToStore", OpBuildPaths: "BuildPaths", OpEnsurePath: "EnsurePath",
	OpAddTempRoot: "AddTempRoot", OpAddIndirectRoot: "AddIndirectRoot", OpSyncWithGC: "SyncWithGC",
	OpFindRoots: "FindRoots", OpExportPath: "ExportPath", OpQueryDeriver: "QueryDeriver",
	OpSetOptions: "SetOptions", OpCollectGarbage: "CollectGarbage",
	OpQuerySubstitutablePathInfo: "QuerySubstitutablePathInfo", OpQueryDerivationOutputs: "QueryDerivationOutputs",
	OpQueryAllValidPaths: "QueryAllValidPaths", OpQueryPathInfo: "QueryPathInfo", OpImportPaths: "ImportPaths",
	OpQueryDerivationOutputNames: "QueryDerivationOutputNames", OpQueryPathFromHashPart: "QueryPathFromHashPart",
	OpQuerySubstitutablePathInfos: "QuerySubstitutablePathInfos", OpQueryValidPaths: "QueryValidPaths",
	OpQuerySubstitutablePaths: "QuerySubstitutablePaths", OpQueryValidDerivers: "QueryValidDerivers",
	OpOptimiseStore: "OptimiseStore", OpVerifyStore: "VerifyStore", OpBuildDerivation: "BuildDerivation",
	OpAddSignatures: "AddSignatures", OpNarFromPath: "NarFromPath", OpAddToStoreNar: "AddToStoreNar",
	OpQueryMissing: "QueryMissing", OpQueryDerivationOutputMap: "QueryDerivationOutputMap",
	OpRegisterDrvOutput: "RegisterDrvOutput", OpQueryRealisation: "QueryRealisation",
	OpAddMultipleToStore: "AddMultipleToStore", OpAddBuildLog: "AddBuildLog",
	OpBuildPathsWithResults: "BuildPathsWithResults",
}

func (o Op) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return "op" + strconv.FormatUint(uint64(o), 10)
}

// Log channel messages the daemon sends before each reply.
const (
	StderrNext          = 0x6f6c6d67 // a log line
	StderrRead          = 0x64617461 // the daemon wants data from the client
	StderrWrite         = 0x64617416 // data for the client's sink
	StderrLast          = 0x616c7473 // end of log; the reply follows
	StderrError         = 0x63787470 // the operation failed; no reply follows
	StderrStartActivity = 0x53545254
	StderrStopActivity  = 0x53544f50
	StderrResult        = 0x52534c54
)

// Field types in activities and results.
const (
	fieldInt    = 0
	fieldString = 1
)
