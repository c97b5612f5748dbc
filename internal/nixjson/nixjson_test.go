package nixjson

import (
	"errors"
	"math"
	"testing"
)

func TestFloat(t *testing.T) {
	// Expected strings are what nlohmann::json (Nix 2.8) dumps; the first
	// group is seen in testdata of internal/derivation (.attrs.json).
	tests := []struct {
		f    float64
		want string
	}{
		{1.5, "1.5"}, {0.1, "0.1"}, {1.23457, "1.23457"}, {1e6, "1000000.0"}, {1e30, "1e+30"},
		{0.0001, "0.0001"}, {1e-5, "1e-05"}, {-2.5, "-2.5"}, {1.23457e8, "123457000.0"},
		{1e10, "10000000000.0"}, {3e9, "3000000000.0"}, {2.5, "2.5"},
		{0, "0.0"}, {math.Copysign(0, -1), "-0.0"}, {1e15, "1e+15"}, {1e14, "100000000000000.0"},
		{123456789012345.6, "123456789012345.6"}, {1.5e-300, "1.5e-300"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
		{5e-324, "5e-324"}, {0.001, "0.001"}, {math.Inf(1), "null"}, {math.NaN(), "null"},
	}
	for _, tt := range tests {
		if got := string(AppendFloat(nil, tt.f)); got != tt.want {
			t.Errorf("AppendFloat(%v) = %s, want %s", tt.f, got, tt.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"b":1,"a":[true,false,null],"c":{}}`, `{"a":[true,false,null],"b":1,"c":{}}`},
		{` { "a" : 1 , "a" : 2 } `, `{"a":2}`},
		{`[-0, 0, -1, 18446744073709551615, 18446744073709551616, -9223372036854775809, 1E2, 1e-400]`,
			`[0,0,-1,18446744073709551615,1.8446744073709552e+19,-9.223372036854776e+18,100.0,0.0]`},
		{`"\u0001\u001f\u007f\u00e9\ud83d\ude00\/\b\f\n\r\t\"\\"`, "\"\\u0001\\u001f\x7f\u00e9\U0001F600/\\b\\f\\n\\r\\t\\\"\\\\\""},
		{`[]`, `[]`},
		{`"ünï"`, `"ünï"`},
	}
	for _, tt := range tests {
		v, err := Parse([]byte(tt.in))
		if err != nil {
			t.Errorf("Parse(%s): %v", tt.in, err)
			continue
		}
		got, err := Dump(v)
		if err != nil || string(got) != tt.want {
			t.Errorf("Dump(Parse(%s)) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	deep := make([]byte, 0, 2*MaxDepth+2)
	for range MaxDepth + 1 {
		deep = append(deep, '[')
	}
	for _, in := range []string{
		``, `{`, `[1,]`, `{"a"}`, `{"a":1,}`, `01`, `1.`, `.5`, `1e`, `-`, `+1`, `tru`, `nul`,
		`"a` + "\x01" + `"`, "\"\xff\"", "\"\xc0\xaf\"", `"\ud800"`, `"\udc00"`, `"\ud800\u0041"`, `"\x"`, `"\u12g4"`,
		`1 2`, `1e400`, `-1e400`, `'a'`, `NaN`, string(deep),
	} {
		if v, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%.30q) = %+v, want an error", in, v)
		} else if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%.30q): error %v does not wrap ErrSyntax", in, err)
		}
	}
	if _, err := Dump(NewString("\xff")); err == nil {
		t.Error("Dump of invalid UTF-8 succeeded")
	}
}

func TestAccessors(t *testing.T) {
	v, err := Parse([]byte(`{"s":"x","n":3,"neg":-1,"f":2.9,"b":true,"o":{"b":1,"a":2},"nul":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := v.Find("s").GetString(); err != nil || s != "x" {
		t.Errorf("GetString = %q, %v", s, err)
	}
	if _, err := v.Find("n").GetString(); err == nil || err.Error() != "[json.exception.type_error.302] type must be string, but is number" {
		t.Errorf("GetString of number: %v", err)
	}
	for key, want := range map[string]uint64{"n": 3, "neg": math.MaxUint64, "f": 2, "b": 1} {
		if got, err := v.Find(key).GetUint64(); err != nil || got != want {
			t.Errorf("GetUint64(%s) = %d, %v; want %d", key, got, err, want)
		}
	}
	if _, err := v.Find("s").GetUint64(); err == nil {
		t.Error("GetUint64 of a string succeeded")
	}
	if n := len(v.Find("o").Iter()); n != 2 || v.Find("o").Iter()[0].Uint != 2 {
		t.Errorf("Iter over object: %d values", n)
	}
	if len(v.Find("nul").Iter()) != 0 || len(v.Find("s").Iter()) != 1 {
		t.Error("Iter over null/string wrong")
	}
	if v.Find("missing") != nil || v.Find("s").Find("x") != nil {
		t.Error("Find of missing key or on a string returned a value")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5,-3,"x\u0001"],"b":{"c":null}}`, `1e-5`, `[[[]]]`, `"\ud83d\ude00"`, `18446744073709551616`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Parse(data)
		if err != nil {
			return
		}
		d1, err := Dump(v)
		if err != nil {
			t.Fatalf("Dump after Parse(%q): %v", data, err)
		}
		v2, err := Parse(d1)
		if err != nil {
			t.Fatalf("Parse(Dump) = %v for %q", err, d1)
		}
		d2, err := Dump(v2)
		if err != nil || string(d1) != string(d2) {
			t.Fatalf("Dump not stable: %q then %q (%v)", d1, d2, err)
		}
	})
}
