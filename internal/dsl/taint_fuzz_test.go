package dsl

import (
	"regexp"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
)

var sinkClasses = []domain.SinkClass{domain.SinkArg, domain.SinkArgTail, domain.SinkURLPath, domain.SinkURLQuery,
	domain.SinkQueryValue, domain.SinkHeader, domain.SinkEnv, domain.SinkPath}

// FuzzPatternVerdict checks the regular-expression reading against the regexp engine itself:
// whenever a pattern is judged safe for a position, no text it matches may be refused there.
func FuzzPatternVerdict(f *testing.F) {
	for _, seed := range [][2]string{
		{"^[a-z0-9][a-z0-9-]*$", "abc"}, {"^[a-z-]+$", "-rf"}, {"^.*$", "a\x00b"}, {"(?i)^[k]+$", "\u212a"},
		{"^[^/]+$", ".."}, {"^a|b$", "xb"}, {"^(a|-b)$", "-b"}, {"^[A-Z]{2,5}-[0-9]{1,8}$", "TCK-1"},
		{`^[\s\S]{0,3}$`, "a\r\n"}, {"^x*$", ""}, {"^\\.\\.?$", ".."}, {"^[ -~]*$", "a\x7f"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pattern, text string) {
		re, err := regexp.Compile(pattern)
		if err != nil || !re.MatchString(text) {
			return
		}
		for _, class := range sinkClasses {
			if why := patternVerdict(re, class); why == "" {
				if err := class.CheckText(text); err != nil {
					t.Fatalf("pattern %q judged safe for %s, yet it matches %q, which %v", pattern, class, text, err)
				}
			}
		}
	})
}

// FuzzCommandRoles reads arbitrary argv lists: one role per element, never a panic, and the
// program is always a role that data cannot choose freely.
func FuzzCommandRoles(f *testing.F) {
	for _, seed := range []string{"sh\x1f-ec\x1fx", "env\x1f-S\x1fsh -c x", "find\x1f.\x1f-exec\x1fsh\x1f-c\x1fx\x1f;", "python3.12\x1f-Bc\x1fx", "ssh\x1f-p\x1f22\x1fh\x1fls", "xargs\x1frm", "awk\x1f-f\x1fp.awk", "sed\x1f-ne\x1fp", "ssh\x1f-o\x1fProxyCommand=x\x1fh", "ssh\x1f-o", "ssh\x1f-F", "git\x1f-c", "git\x1fclone\x1f-u", "tar\x1f-I", "sqlite3\x1f-cmd", "sqlite3", "docker\x1frun\x1fimg\x1fsh\x1f-c\x1fx", "kubectl\x1fexec\x1f--", "flock\x1ff\x1f-c", "cmd\x1f/c", "psql"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, joined string) {
		var argv []string
		start := 0
		for i := 0; i <= len(joined); i++ {
			if i == len(joined) || joined[i] == 0x1f {
				argv = append(argv, joined[start:i])
				start = i + 1
			}
		}
		roles, _ := commandRoles(argv)
		if len(roles) != len(argv) {
			t.Fatalf("%d roles for %d arguments", len(roles), len(argv))
		}
		if len(argv) > 0 && roles[0] == roleArg {
			t.Fatalf("the program %q counts as plain data", argv[0])
		}
	})
}
