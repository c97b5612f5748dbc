package nixgc

import (
	"context"
	"os"
	"regexp"
	"strings"

	"github.com/silo-cache/silo/internal/nixstore"
)

var mapsLine = regexp.MustCompile(`^\s*\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+(/\S+)\s*$`)

// findRuntimeRoots adds the store paths running processes use, as Nix's
// findRuntimeRoots on Linux: /proc/<pid>/exe, cwd and fd/* links, the
// files mapped in /proc/<pid>/maps, store paths in /proc/<pid>/environ,
// and the programs named in /proc/sys/kernel/{modprobe,fbsplash,
// poweroff_cmd}. Processes that vanish or deny access are skipped.
func findRuntimeRoots(ctx context.Context, s *nixstore.Store, roots Roots, censor bool) error {
	unchecked := map[string][]string{} // target -> files naming it
	add := func(target, from string) { unchecked[target] = append(unchecked[target], from) }
	storeRe := regexp.MustCompile(regexp.QuoteMeta(string(s.Dir())) + `/[0-9a-z]+[0-9a-zA-Z\+\-\._\?=]*`)
	procs, err := os.ReadDir("/proc")
	if err == nil {
		for _, e := range procs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !allDigits(e.Name()) {
				continue
			}
			dir := "/proc/" + e.Name()
			readProcLink(dir+"/exe", add)
			readProcLink(dir+"/cwd", add)
			if fds, err := os.ReadDir(dir + "/fd"); err == nil {
				for _, fd := range fds {
					if !strings.HasPrefix(fd.Name(), ".") {
						readProcLink(dir+"/fd/"+fd.Name(), add)
					}
				}
			}
			if maps, err := os.ReadFile(dir + "/maps"); err == nil {
				for _, line := range strings.Split(string(maps), "\n") {
					if m := mapsLine.FindStringSubmatch(line); m != nil {
						add(m[1], dir+"/maps")
					}
				}
			}
			if env, err := os.ReadFile(dir + "/environ"); err == nil {
				for _, m := range storeRe.FindAllString(string(env), -1) {
					add(m, dir+"/environ")
				}
			}
		}
	}
	for _, f := range []string{"/proc/sys/kernel/modprobe", "/proc/sys/kernel/fbsplash", "/proc/sys/kernel/poweroff_cmd"} {
		if b, err := os.ReadFile(f); err == nil {
			add(string(b), f)
		}
	}
	for target, links := range unchecked {
		p, ok := storePathOf(s.Dir(), target)
		if !ok {
			continue
		}
		valid, err := s.IsValid(ctx, p)
		if err != nil {
			return err
		}
		if !valid {
			continue
		}
		if censor {
			roots.add(p, Censored)
			continue
		}
		for _, l := range links {
			roots.add(p, l)
		}
	}
	return nil
}

func readProcLink(file string, add func(target, from string)) {
	t, err := os.Readlink(file)
	if err != nil {
		return // gone, or not ours to read (Nix ignores these too)
	}
	if strings.HasPrefix(t, "/") {
		add(t, file)
	}
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
