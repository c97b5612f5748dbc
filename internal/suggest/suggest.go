// Package suggest finds the likely intended word among known ones, for
// "did you mean" hints on unknown commands, flags, config keys and names.
package suggest

import "strings"

// Closest returns the candidate nearest to word by edit distance
// (insertions, deletions, substitutions and swaps of adjacent characters,
// ignoring case), if it is near enough to be a plausible typo: at most
// one edit for short words, up to a third of the word's length for longer
// ones. A candidate that word is a prefix of also counts ("cach" →
// "cache"). ok is false when nothing is close.
func Closest(word string, candidates []string) (best string, ok bool) {
	if word == "" {
		return "", false
	}
	lw := strings.ToLower(word)
	bestD := -1
	for _, c := range candidates {
		lc := strings.ToLower(c)
		if lc == lw {
			return c, true
		}
		d := distance(lw, lc)
		if len(lw) >= 3 && strings.HasPrefix(lc, lw) {
			d = min(d, 1)
		}
		if bestD < 0 || d < bestD || d == bestD && c < best {
			best, bestD = c, d
		}
	}
	limit := max(1, len(word)/3)
	if bestD < 0 || bestD > limit {
		return "", false
	}
	return best, true
}

// distance is the optimal string alignment distance of a and b.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
