package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ReadPathInfo reads a ValidPathInfo (Nix's ValidPathInfo::read, or the
// fields AddToStoreNar sends): the path first if withPath, then the
// metadata in the format of protocol minor.
func (d *Decoder) ReadPathInfo(withPath bool, minor uint64) (path string, info *PathInfo, err error) {
	if withPath {
		if path, err = d.String(); err != nil {
			return "", nil, err
		}
	}
	info = &PathInfo{}
	if info.Deriver, err = d.String(); err != nil {
		return "", nil, err
	}
	if info.NarHash, err = d.String(); err != nil {
		return "", nil, err
	}
	if info.References, err = d.Strings(); err != nil {
		return "", nil, err
	}
	if info.RegistrationTime, err = d.Uint64(); err != nil {
		return "", nil, err
	}
	if info.NarSize, err = d.Uint64(); err != nil {
		return "", nil, err
	}
	if minor >= 16 {
		if info.Ultimate, err = d.Bool(); err != nil {
			return "", nil, err
		}
		if info.Sigs, err = d.Strings(); err != nil {
			return "", nil, err
		}
		if info.CA, err = d.String(); err != nil {
			return "", nil, err
		}
	}
	return path, info, nil
}

// WritePathInfo writes a ValidPathInfo (ValidPathInfo::write): path first
// if withPath, then the metadata in the format of protocol minor.
func (e *Encoder) WritePathInfo(path string, info *PathInfo, withPath bool, minor uint64) {
	if withPath {
		e.String(path)
	}
	e.String(info.Deriver)
	e.String(info.NarHash)
	e.Strings(info.References)
	e.Uint64(info.RegistrationTime)
	e.Uint64(info.NarSize)
	if minor >= 16 {
		e.Bool(info.Ultimate)
		e.Strings(info.Sigs)
		e.String(info.CA)
	}
}

// DerivedPath is what a client asks to build or query (Nix's DerivedPath):
// a store path (Opaque), or outputs of a derivation (Built).
type DerivedPath struct {
	Path    string   // the store path, or the derivation
	Built   bool     // Path is a derivation whose outputs are meant
	Outputs []string // wanted outputs, sorted; empty means all ("*")
}

// ParseDerivedPath parses "<path>", "<drv>!<out>,<out>" or "<drv>!*", as
// Nix's DerivedPath::parse. The paths are not checked here.
func ParseDerivedPath(s string) DerivedPath {
	p, outs, built := strings.Cut(s, "!")
	if !built {
		return DerivedPath{Path: s}
	}
	dp := DerivedPath{Path: p, Built: true}
	if outs != "*" {
		for _, o := range strings.Split(outs, ",") {
			if o != "" {
				dp.Outputs = append(dp.Outputs, o)
			}
		}
		sort.Strings(dp.Outputs)
		dp.Outputs = slices.Compact(dp.Outputs)
	}
	return dp
}

func (p DerivedPath) String() string {
	if !p.Built {
		return p.Path
	}
	if len(p.Outputs) == 0 {
		return p.Path + "!*"
	}
	return p.Path + "!" + strings.Join(p.Outputs, ",")
}

// BuildStatus is BuildResult::Status.
type BuildStatus uint64

// Build statuses.
const (
	Built BuildStatus = iota
	Substituted
	AlreadyValid
	PermanentFailure
	InputRejected
	OutputRejected
	TransientFailure
	CachedFailure
	TimedOut
	MiscFailure
	DependencyFailed
	LogLimitExceeded
	NotDeterministic
	ResolvesToAlreadyValid
	NoSubstituters
)

// BuildResult is the outcome of building one DerivedPath.
type BuildResult struct {
	Path               DerivedPath
	Status             BuildStatus
	ErrorMsg           string
	TimesBuilt         uint64
	IsNonDeterministic bool
	StartTime          uint64
	StopTime           uint64
	// BuiltOutputs maps DrvOutput ids to realisations, of wanted outputs.
	BuiltOutputs map[string]Realisation
}

// WriteBuildResult writes r as BuildPathsWithResults replies it.
func (e *Encoder) WriteBuildResult(r *BuildResult) error {
	e.String(r.Path.String())
	e.Uint64(uint64(r.Status))
	e.String(r.ErrorMsg)
	e.Uint64(r.TimesBuilt)
	e.Bool(r.IsNonDeterministic)
	e.Uint64(r.StartTime)
	e.Uint64(r.StopTime)
	return e.WriteRealisations(r.BuiltOutputs)
}

// WriteRealisations writes a map DrvOutput → Realisation (sorted by id).
func (e *Encoder) WriteRealisations(m map[string]Realisation) error {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	e.Uint64(uint64(len(ids)))
	for _, id := range ids {
		js, err := m[id].JSON()
		if err != nil {
			return err
		}
		e.String(id)
		e.String(js)
	}
	return nil
}

// Realisation is a CA derivation output's realisation as the protocol
// carries it (≥ 1.31): JSON with store paths as base names.
type Realisation struct {
	DependentRealisations map[string]string `json:"dependentRealisations"`
	ID                    string            `json:"id"`
	OutPath               string            `json:"outPath"`
	Signatures            []string          `json:"signatures"`
}

// JSON renders r as Nix's Realisation::toJSON().dump(): keys sorted,
// compact, nothing escaped that Nix leaves alone.
func (r Realisation) JSON() (string, error) {
	if r.DependentRealisations == nil {
		r.DependentRealisations = map[string]string{}
	}
	if r.Signatures == nil {
		r.Signatures = []string{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return "", fmt.Errorf("encode realisation %s: %w", r.ID, err)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// ParseRealisation parses the JSON form, as Realisation::fromJSON: id and
// outPath are required.
func ParseRealisation(s string) (Realisation, error) {
	var raw struct {
		DependentRealisations map[string]string `json:"dependentRealisations"`
		ID                    *string           `json:"id"`
		OutPath               *string           `json:"outPath"`
		Signatures            []string          `json:"signatures"`
	}
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return Realisation{}, fmt.Errorf("parse realisation: %w", err)
	}
	if raw.ID == nil {
		return Realisation{}, fmt.Errorf("Drv output info file 'remote-protocol' is corrupt, missing field id")
	}
	if raw.OutPath == nil {
		return Realisation{}, fmt.Errorf("Drv output info file 'remote-protocol' is corrupt, missing field outPath")
	}
	sort.Strings(raw.Signatures)
	return Realisation{DependentRealisations: raw.DependentRealisations, ID: *raw.ID, OutPath: *raw.OutPath,
		Signatures: slices.Compact(raw.Signatures)}, nil
}
