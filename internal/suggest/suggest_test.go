package suggest

import "testing"

func TestClosest(t *testing.T) {
	cmds := []string{"cache", "token", "queue", "push", "publish", "serve", "login", "use", "watch-store", "watch-exec"}
	tests := []struct {
		word string
		want string
		ok   bool
	}{
		{"cahce", "cache", true},
		{"cach", "cache", true},
		{"tokn", "token", true},
		{"serv", "serve", true},
		{"pubish", "publish", true},
		{"watch-stor", "watch-store", true},
		{"Serve", "serve", true},
		{"x", "", false},
		{"frobnicate", "", false},
		{"", "", false},
		{"us", "use", true},
	}
	for _, tt := range tests {
		got, ok := Closest(tt.word, cmds)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Closest(%q) = %q, %v; want %q, %v", tt.word, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"abc", "abc", 0},
		{"abc", "acb", 1}, {"kitten", "sitting", 3}, {"data-dir", "data-dri", 1},
	}
	for _, tt := range tests {
		if got := distance(tt.a, tt.b); got != tt.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
