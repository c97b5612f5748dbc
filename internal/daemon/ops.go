package daemon

import (
	"context"

	"github.com/silo-cache/silo/internal/worker"
)

// handler serves one operation: it reads the arguments, calls
// c.startWork, does the work, calls c.stopWork and writes the reply. An
// error returned before startWork ends the connection (the arguments
// could not be read or made no sense); after it, the error goes to the
// client and the connection goes on.
type handler func(ctx context.Context, c *conn) error

// ops is the op table: every operation of protocol 1.34 that silo serves.
// Operations missing here (24, 25: never served by Nix 2.8 either) are
// answered "invalid operation %d", as Nix does.
var ops = map[worker.Op]handler{
	// Queries (op_query.go).
	worker.OpIsValidPath:                 opIsValidPath,
	worker.OpHasSubstitutes:              opHasSubstitutes,
	worker.OpQueryPathHash:               opQueryPathHash,
	worker.OpQueryReferences:             pathSetOp(worker.OpQueryReferences),
	worker.OpQueryReferrers:              pathSetOp(worker.OpQueryReferrers),
	worker.OpQueryDeriver:                opQueryDeriver,
	worker.OpQueryDerivationOutputs:      pathSetOp(worker.OpQueryDerivationOutputs),
	worker.OpQueryAllValidPaths:          opQueryAllValidPaths,
	worker.OpQueryPathInfo:               opQueryPathInfo,
	worker.OpQueryDerivationOutputNames:  opQueryDerivationOutputNames,
	worker.OpQueryPathFromHashPart:       opQueryPathFromHashPart,
	worker.OpQueryValidPaths:             opQueryValidPaths,
	worker.OpQueryValidDerivers:          pathSetOp(worker.OpQueryValidDerivers),
	worker.OpQueryDerivationOutputMap:    opQueryDerivationOutputMap,
	worker.OpQueryRealisation:            opQueryRealisation,
	worker.OpQueryMissing:                opQueryMissing,
	worker.OpQuerySubstitutablePaths:     opQuerySubstitutablePaths,
	worker.OpQuerySubstitutablePathInfo:  opQuerySubstitutablePathInfo,
	worker.OpQuerySubstitutablePathInfos: opQuerySubstitutablePathInfos,

	// Adding to the store (op_add.go, op_addmulti.go).
	worker.OpAddToStore:         opAddToStore,
	worker.OpAddTextToStore:     opAddTextToStore,
	worker.OpAddToStoreNar:      opAddToStoreNar,
	worker.OpAddMultipleToStore: opAddMultipleToStore,
	worker.OpAddSignatures:      opAddSignatures,
	worker.OpAddBuildLog:        opAddBuildLog,
	worker.OpRegisterDrvOutput:  opRegisterDrvOutput,
	worker.OpImportPaths:        opImportPaths,
	worker.OpExportPath:         opExportPath,
	worker.OpNarFromPath:        opNarFromPath,

	// Roots and garbage collection (op_gc.go).
	worker.OpAddTempRoot:     opAddTempRoot,
	worker.OpAddIndirectRoot: opAddIndirectRoot,
	worker.OpSyncWithGC:      opSyncWithGC,
	worker.OpFindRoots:       opFindRoots,
	worker.OpCollectGarbage:  opCollectGarbage,

	// Maintenance (op_maint.go).
	worker.OpOptimiseStore: opOptimiseStore,
	worker.OpVerifyStore:   opVerifyStore,

	// Building (op_build.go).
	worker.OpBuildPaths:            opBuildPaths,
	worker.OpBuildPathsWithResults: opBuildPathsWithResults,
	worker.OpBuildDerivation:       opBuildDerivation,
	worker.OpEnsurePath:            opEnsurePath,

	// Settings (op_options.go).
	worker.OpSetOptions: opSetOptions,
}
