package worker

import (
	"context"
	"fmt"
	"strings"
)

// PathInfo is a valid path's metadata as the daemon sends it
// (ValidPathInfo::write): full store paths, the NAR hash in bare base16.
type PathInfo struct {
	Deriver          string // full path, "" if unknown
	NarHash          string // sha256 digest, base16 without "sha256:"
	References       []string
	RegistrationTime uint64 // seconds since the epoch
	NarSize          uint64
	Ultimate         bool     // built locally (protocol ≥ 1.16)
	Sigs             []string // "keyname:base64" (protocol ≥ 1.16)
	CA               string   // content address, "" if none (protocol ≥ 1.16)
}

// IsValidPath reports whether path is valid in the daemon's store.
func (c *Client) IsValidPath(ctx context.Context, path string) (bool, error) {
	var valid bool
	err := c.do(ctx, func() error {
		c.enc.Uint64(uint64(OpIsValidPath))
		c.enc.String(path)
		if err := c.processStderr(OpIsValidPath); err != nil {
			return err
		}
		var err error
		valid, err = c.dec.Bool()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("is %s valid: %w", path, err)
	}
	return valid, nil
}

// QueryPathInfo returns path's metadata, or an error wrapping ErrNotValid.
func (c *Client) QueryPathInfo(ctx context.Context, path string) (*PathInfo, error) {
	var info *PathInfo
	err := c.do(ctx, func() error {
		c.enc.Uint64(uint64(OpQueryPathInfo))
		c.enc.String(path)
		if err := c.processStderr(OpQueryPathInfo); err != nil {
			if de, ok := err.(*DaemonError); ok && strings.Contains(de.Message, "is not valid") {
				return fmt.Errorf("%w (%w)", ErrNotValid, err) // daemons before 1.17
			}
			return err
		}
		if Minor(c.version) >= 17 {
			valid, err := c.dec.Bool()
			if err != nil {
				return err
			}
			if !valid {
				return ErrNotValid
			}
		}
		var err error
		info, err = c.readPathInfo()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("query path info of %s: %w", path, err)
	}
	return info, nil
}

func (c *Client) readPathInfo() (*PathInfo, error) {
	var info PathInfo
	var err error
	if info.Deriver, err = c.dec.String(); err != nil {
		return nil, err
	}
	if info.NarHash, err = c.dec.String(); err != nil {
		return nil, err
	}
	if info.References, err = c.dec.Strings(); err != nil {
		return nil, err
	}
	if info.RegistrationTime, err = c.dec.Uint64(); err != nil {
		return nil, err
	}
	if info.NarSize, err = c.dec.Uint64(); err != nil {
		return nil, err
	}
	if Minor(c.version) >= 16 {
		if info.Ultimate, err = c.dec.Bool(); err != nil {
			return nil, err
		}
		if info.Sigs, err = c.dec.Strings(); err != nil {
			return nil, err
		}
		if info.CA, err = c.dec.String(); err != nil {
			return nil, err
		}
	}
	return &info, nil
}

// QueryPathFromHashPart returns the full path of the valid path whose hash
// part is hashPart, or "" if there is none.
func (c *Client) QueryPathFromHashPart(ctx context.Context, hashPart string) (string, error) {
	var path string
	err := c.do(ctx, func() error {
		c.enc.Uint64(uint64(OpQueryPathFromHashPart))
		c.enc.String(hashPart)
		if err := c.processStderr(OpQueryPathFromHashPart); err != nil {
			return err
		}
		var err error
		path, err = c.dec.String()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("query path from hash part %s: %w", hashPart, err)
	}
	return path, nil
}

// QueryValidPaths returns the subset of paths that are valid, without
// substituting (the daemon answers in its own order, sorted).
func (c *Client) QueryValidPaths(ctx context.Context, paths []string) ([]string, error) {
	var valid []string
	err := c.do(ctx, func() error {
		c.enc.Uint64(uint64(OpQueryValidPaths))
		c.enc.Strings(paths)
		if Minor(c.version) >= 27 {
			c.enc.Bool(false) // do not substitute
		}
		if err := c.processStderr(OpQueryValidPaths); err != nil {
			return err
		}
		var err error
		valid, err = c.dec.Strings()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("query valid paths (%d asked): %w", len(paths), err)
	}
	return valid, nil
}
