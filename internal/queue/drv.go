package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxDrvRead bounds how much of a .drv file is read for its outputs, which
// come first.
const maxDrvRead = 1 << 20

// drvOutputs returns the output paths a derivation file names, in order.
// Nix 2.8's post-build-hook leaves OUT_PATHS empty (NixOS/nix#6446), so the
// queue finds a build's outputs from DRV_PATH instead. Floating
// content-addressed outputs (no path in the .drv) are skipped.
func drvOutputs(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read derivation: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDrvRead))
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", file, err)
	}
	outs, err := parseDrvOutputs(string(data))
	if err != nil {
		return nil, fmt.Errorf("derivation %s: %w", file, err)
	}
	return outs, nil
}

var errDrv = errors.New("not a derivation in ATerm form")

// parseDrvOutputs parses the output list at the start of a derivation:
// Derive([("name","path","hashAlgo","hash"),...],...
func parseDrvOutputs(s string) ([]string, error) {
	p := &aterm{s: s}
	if !p.lit("Derive([") {
		return nil, fmt.Errorf("%w: does not start with Derive([", errDrv)
	}
	var outs []string
	if p.lit("]") {
		return outs, nil
	}
	for {
		if !p.lit("(") {
			return nil, fmt.Errorf("%w: output %d: want '('", errDrv, len(outs)+1)
		}
		var fields [4]string
		for i := range fields {
			if i > 0 && !p.lit(",") {
				return nil, fmt.Errorf("%w: output %d: want ','", errDrv, len(outs)+1)
			}
			str, err := p.str()
			if err != nil {
				return nil, fmt.Errorf("%w: output %d: %v", errDrv, len(outs)+1, err)
			}
			fields[i] = str
		}
		if !p.lit(")") {
			return nil, fmt.Errorf("%w: output %d: want ')'", errDrv, len(outs)+1)
		}
		if fields[1] != "" {
			outs = append(outs, fields[1])
		}
		if p.lit("]") {
			return outs, nil
		}
		if !p.lit(",") {
			return nil, fmt.Errorf("%w: after output %d: want ',' or ']'", errDrv, len(outs))
		}
	}
}

type aterm struct {
	s   string
	pos int
}

func (p *aterm) lit(l string) bool {
	if strings.HasPrefix(p.s[p.pos:], l) {
		p.pos += len(l)
		return true
	}
	return false
}

// str reads a quoted string with Nix's escapes (\" \\ \n \r \t).
func (p *aterm) str() (string, error) {
	if !p.lit(`"`) {
		return "", errors.New(`want '"'`)
	}
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.pos >= len(p.s) {
				return "", errors.New("unterminated escape")
			}
			e := p.s[p.pos]
			p.pos++
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("unterminated string")
}
