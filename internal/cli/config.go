package cli

import "github.com/silo-cache/silo/internal/config"

func init() { ConfigLoader = config.Load }
