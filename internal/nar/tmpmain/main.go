package main

import (
	"bufio"
	"context"
	"fmt"
	"os"

	"github.com/silo-cache/silo/internal/nar"
)

func main() {
	ctx := context.Background()
	switch os.Args[1] {
	case "dump":
		if err := nar.Dump(ctx, os.Stdout, os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "hash":
		h, n, err := nar.HashPath(ctx, os.Args[2])
		fmt.Println(h.SRI(), n, err)
	case "copy":
		w := nar.NewWriter(bufio.NewWriter(os.Stdout))
		err := nar.Copy(w, nar.NewReader(os.Stdin))
		if err == nil {
			err = w.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
