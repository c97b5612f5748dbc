// Package config reads silo's TOML config files. A file is a flat table
// whose keys are the command's flag names ("listen", "data-dir"); values
// are strings, numbers, booleans, or arrays of them for repeatable flags.
// The file sets only what neither a flag nor a SILO_* variable set.
package config

import (
	"fmt"
	"os"
	"strconv"

	"github.com/BurntSushi/toml"
)

// Load reads the file at path into flag name → values.
func Load(path string) (map[string][]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	_, err = toml.Decode(string(data), &raw)
	if err != nil {
		return nil, fmt.Errorf("not valid TOML: %w", err)
	}
	out := make(map[string][]string, len(raw))
	for key, v := range raw {
		vals, err := flatten(v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		out[key] = vals
	}
	return out, nil
}

func flatten(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case int64:
		return []string{strconv.FormatInt(v, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(v, 'g', -1, 64)}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	case []any:
		var out []string
		for _, e := range v {
			s, err := flatten(e)
			if err != nil {
				return nil, err
			}
			if len(s) != 1 {
				return nil, fmt.Errorf("nested arrays are not settings")
			}
			out = append(out, s...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("a %T is not a setting (use a string, number, boolean or array)", v)
}
