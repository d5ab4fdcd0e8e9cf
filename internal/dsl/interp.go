package dsl

import (
	"path"
	"strings"
)

// argRole is what one element of an exec argv is to the program that reads it.
type argRole int

const (
	// roleArg is data: a file name, a flag value, a positional parameter.
	roleArg argRole = iota
	// roleProgram chooses what runs: the program itself, a script file, a module, a host that
	// runs a remote command. Only spec text or a value the spec lists may stand there.
	roleProgram
	// roleCode is text an interpreter runs as code: no data at all may stand there.
	roleCode
)

// commandRoles reads an argv list the way the programs in it would and says which elements
// are code, which choose a program, and whether the program reads code from its stdin.
// Wrappers (env, sudo, timeout, nice, xargs, find -exec, busybox, ...) are looked through.
// A program chosen by a placeholder is unknown, so everything after it counts as code.
func commandRoles(argv []string) (roles []argRole, stdinCode bool) {
	roles = make([]argRole, len(argv))
	stdinCode = rolesFrom(argv, roles, 0)
	return roles, stdinCode
}

// rolesFrom assigns roles from the program at argv[i] on and reports whether the program
// reads code from stdin.
func rolesFrom(argv []string, roles []argRole, i int) bool {
	if i >= len(argv) {
		return false
	}
	roles[i] = roleProgram
	if strings.Contains(argv[i], "${{") {
		for j := i + 1; j < len(argv); j++ {
			roles[j] = roleCode
		}
		return true
	}
	name := programName(argv[i])
	rest := i + 1
	switch name {
	case "env":
		return rolesFrom(argv, roles, envOperand(argv, roles, rest))
	case "sudo", "doas", "nice", "nohup", "stdbuf", "setsid", "time", "ionice", "chrt", "taskset",
		"strace", "ltrace", "unbuffer", "command", "exec", "builtin", "runuser", "chpst", "caffeinate", "systemd-run":
		return rolesFrom(argv, roles, wrappedCommand(name, argv, roles, rest))
	case "unshare", "nsenter", "setpriv", "prlimit":
		return rolesFrom(argv, roles, wrappedCommand(name, argv, roles, rest))
	case "kubectl", "oc", "docker", "podman", "nerdctl", "lxc", "incus":
		// The command run in a container or pod follows "--" (kubectl exec) or the image,
		// whose options are too many to read here: from "--", or from the first argument
		// that names a shell or an interpreter, the rest is read as a command line.
		for j := rest; j < len(argv); j++ {
			if argv[j] == "--" {
				return rolesFrom(argv, roles, j+1)
			}
			if interpreters[programName(argv[j])] {
				return rolesFrom(argv, roles, j)
			}
		}
		return false
	case "git":
		gitRoles(argv, roles, rest)
		return false
	case "tar", "gtar", "bsdtar":
		tarRoles(argv, roles, rest)
		return false
	case "rsync":
		optionRoles(argv, roles, rest, map[string]argRole{"-e": roleCode, "--rsh": roleCode, "--rsync-path": roleCode})
		return false
	case "make", "gmake", "bmake":
		// A target chooses the recipe that runs, and an operand NAME=VALUE is an assignment
		// whose value make expands ($(shell ...)): operands choose what runs.
		makeRoles(argv, roles, rest)
		return false
	case "scp", "sftp":
		for j := rest; j < len(argv); j++ {
			if role, ok := sshOption(argv, j); ok {
				if a := argv[j]; a == "-o" || a == "-F" || a == "-J" {
					if j+1 < len(argv) {
						roles[j+1] = role
					}
					j++
				} else {
					roles[j] = role
				}
			} else if argv[j] == "-S" && j+1 < len(argv) {
				roles[j+1] = roleProgram // the ssh program
				j++
			}
		}
		return false
	case "psql":
		// psql runs its -c commands and stdin as SQL with meta-commands, and \! runs a shell.
		optionRoles(argv, roles, rest, map[string]argRole{"-c": roleCode, "--command": roleCode, "-f": roleProgram, "--file": roleProgram})
		return !hasAny(argv[rest:], "-c", "--command", "-f", "--file")
	case "mysql", "mariadb":
		optionRoles(argv, roles, rest, map[string]argRole{"-e": roleCode, "--execute": roleCode, "--init-command": roleCode})
		return !hasAny(argv[rest:], "-e", "--execute")
	case "sqlite", "sqlite3":
		return sqliteRoles(argv, roles, rest)
	case "cmd":
		for j := rest; j < len(argv); j++ {
			if a := strings.ToLower(argv[j]); a == "/c" || a == "/k" || a == "/r" {
				for k := j + 1; k < len(argv); k++ {
					roles[k] = roleCode
				}
				return false
			}
		}
		return true
	case "timeout", "chroot":
		j := skipOptions(argv, rest, "ksv")
		if j < len(argv) {
			j++ // the duration, or the new root
		}
		return rolesFrom(argv, roles, j)
	case "xargs":
		// What xargs reads from stdin becomes the command's arguments, options included.
		j := skipOptions(argv, rest, "IndPEasLl")
		rolesFrom(argv, roles, j)
		return true
	case "busybox", "toybox":
		return rolesFrom(argv, roles, rest)
	case "watch", "ssh", "script", "su", "flock", "parallel":
		return codeAfterHost(name, argv, roles, rest)
	case "find":
		findExec(argv, roles, rest)
		return false
	case "sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "rbash", "fish", "csh", "tcsh", "yash", "posh":
		return shellRoles(argv, roles, rest)
	case "python", "pypy", "python2", "python3":
		return scriptRoles(argv, roles, rest, interp{code: "c", program: "m", withArg: "WXQ"})
	case "node", "nodejs", "bun":
		return scriptRoles(argv, roles, rest, interp{code: "ep", long: []string{"--eval", "--print"}, program: "r", longProgram: []string{"--require", "--import", "--loader"}})
	case "deno":
		for j := rest; j < len(argv); j++ {
			if argv[j] == "eval" && j+1 < len(argv) {
				roles[j+1] = roleCode
				return false
			}
			if !strings.HasPrefix(argv[j], "-") {
				if j+1 < len(argv) && argv[j] == "run" {
					roles[j+1] = roleProgram
				}
				return false
			}
		}
		return true
	case "perl":
		return scriptRoles(argv, roles, rest, interp{code: "eE", program: "Mm", withArg: "Ix"})
	case "ruby", "jruby", "irb":
		return scriptRoles(argv, roles, rest, interp{code: "e", program: "r", withArg: "IC"})
	case "php":
		return scriptRoles(argv, roles, rest, interp{code: "rRBE", program: "fF", withArg: "cdz"})
	case "lua", "luajit":
		return scriptRoles(argv, roles, rest, interp{code: "e", program: "l"})
	case "rscript", "r":
		return scriptRoles(argv, roles, rest, interp{code: "e", long: []string{"--expr"}, longProgram: []string{"--file"}})
	case "julia":
		return scriptRoles(argv, roles, rest, interp{code: "eE", long: []string{"--eval", "--print"}, program: "L", longProgram: []string{"--load"}})
	case "tclsh", "wish", "expect", "osascript", "jshell", "groovy", "scala", "kotlin", "swift", "guile", "racket", "sbcl", "clisp":
		return scriptRoles(argv, roles, rest, interp{code: "ce", long: []string{"--eval", "--command"}})
	case "pwsh", "powershell":
		return scriptRoles(argv, roles, rest, interp{long: []string{"-c", "-command", "-encodedcommand", "-e", "-ec"}, longProgram: []string{"-file", "-f"}, caseless: true})
	case "awk", "gawk", "mawk", "nawk":
		return awkRoles(argv, roles, rest)
	case "sed", "gsed":
		return sedRoles(argv, roles, rest)
	}
	return false
}

// programName is the program an argv[0] names, without folder, .exe or version suffix
// (python3.12 -> python3 -> python kept as python3: both are listed).
func programName(arg0 string) string {
	name := strings.ToLower(path.Base(strings.ReplaceAll(arg0, `\`, "/")))
	name = strings.TrimSuffix(name, ".exe")
	for _, known := range []string{"python3", "python2", "pypy3"} {
		if strings.HasPrefix(name, known) && strings.Trim(name[len(known):], "0123456789.-") == "" {
			return strings.TrimSuffix(known, "3")
		}
	}
	trimmed := strings.TrimRight(name, "0123456789.-")
	if trimmed != "" {
		return trimmed
	}
	return name
}

// envOperand skips env's options and NAME=VALUE assignments to the command it runs. -S
// splits a string into a whole command line: that string is code.
func envOperand(argv []string, roles []argRole, j int) int {
	for ; j < len(argv); j++ {
		a := argv[j]
		switch {
		case a == "--":
			return j + 1
		case a == "-S" || a == "--split-string" || strings.HasPrefix(a, "--split-string=") || (strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.Contains(a, "S")):
			if a == "-S" || a == "--split-string" {
				if j+1 < len(argv) {
					roles[j+1] = roleCode
				}
				return len(argv)
			}
			roles[j] = roleCode
			return len(argv)
		case a == "-u" || a == "-C" || a == "--unset" || a == "--chdir":
			j++
		case strings.HasPrefix(a, "-"):
		case strings.Contains(a, "="):
		default:
			return j
		}
	}
	return j
}

// wrappedCommand skips a wrapper's options to the command it runs.
func wrappedCommand(name string, argv []string, roles []argRole, j int) int {
	withArg := map[string]string{"sudo": "ugCDhprtTU", "doas": "uC", "nice": "n", "stdbuf": "ioe", "ionice": "cnp",
		"chrt": "", "taskset": "", "runuser": "ugl", "chpst": "ugUenlmdosrf", "systemd-run": "pEu",
		"unshare": "SGRw", "nsenter": "tSG", "setpriv": "", "prlimit": "p"}[name]
	for ; j < len(argv); j++ {
		a := argv[j]
		if a == "--" {
			j++
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		if (name == "sudo" || name == "runuser" || name == "su") && (a == "-c" || a == "--command") {
			if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			return len(argv)
		}
		if len(a) == 2 && strings.ContainsRune(withArg, rune(a[1])) {
			j++
		}
	}
	if (name == "chrt" || name == "taskset") && j < len(argv) {
		j++ // the priority, or the CPU mask
	}
	return j
}

// codeAfterHost covers programs that hand their arguments to a shell: watch runs them with
// sh -c, ssh on the remote host, su/flock/script take a -c command, parallel a command template.
func codeAfterHost(name string, argv []string, roles []argRole, j int) bool {
	withArg := map[string]string{"watch": "nd", "ssh": "bcDEeFIiJLlmOopQRSWw", "script": "", "su": "s", "flock": "wE", "parallel": "jSa"}[name]
	for ; j < len(argv); j++ {
		a := argv[j]
		if a == "--" {
			j++
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		if (name == "su" || name == "flock" || name == "script") && (a == "-c" || a == "--command") {
			if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			return false
		}
		if name == "ssh" {
			if role, ok := sshOption(argv, j); ok {
				if a == "-o" || a == "-F" || a == "-J" {
					if j+1 < len(argv) {
						roles[j+1] = role
					}
					j++
				} else {
					roles[j] = role
				}
				continue
			}
		}
		if len(a) == 2 && strings.ContainsRune(withArg, rune(a[1])) {
			j++
		}
	}
	switch name {
	case "ssh", "su":
		if j < len(argv) {
			roles[j] = roleProgram // the host, or the user
			j++
		}
	case "flock":
		if j < len(argv) {
			j++ // the lock file
		}
		if j < len(argv) && (argv[j] == "-c" || argv[j] == "--command") {
			if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			return false
		}
		return rolesFrom(argv, roles, j)
	}
	for ; j < len(argv); j++ {
		roles[j] = roleCode
	}
	return name == "parallel"
}

func findExec(argv []string, roles []argRole, j int) {
	for ; j < len(argv); j++ {
		switch argv[j] {
		case "-exec", "-execdir", "-ok", "-okdir":
			end := j + 1
			for end < len(argv) && argv[end] != ";" && argv[end] != "+" {
				end++
			}
			// find gives the command none of the step's stdin, so only its argv matters.
			sub := make([]argRole, end-(j+1))
			rolesFrom(argv[j+1:end], sub, 0)
			copy(roles[j+1:end], sub)
			j = end
		}
	}
}

// skipOptions skips single-dash options, those in withArg taking the next argument.
func skipOptions(argv []string, j int, withArg string) int {
	for ; j < len(argv); j++ {
		a := argv[j]
		if a == "--" {
			return j + 1
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			return j
		}
		if len(a) == 2 && strings.ContainsRune(withArg, rune(a[1])) {
			j++
		}
	}
	return j
}

// shellRoles: with -c (alone or in a cluster like -ec, -xc) the first operand is code; without
// it the first operand is a script file, or, when there is none or -s is given, stdin is code.
func shellRoles(argv []string, roles []argRole, j int) bool {
	hasC, hasS := false, false
	for ; j < len(argv); j++ {
		a := argv[j]
		if a == "--" || a == "-" {
			j++
			break
		}
		if len(a) < 2 || (a[0] != '-' && a[0] != '+') {
			break
		}
		switch {
		case a == "-o" || a == "+o" || a == "-O" || a == "+O":
			j++
		case a == "--rcfile" || a == "--init-file" || a == "--init-command" || a == "-C" && programName(argv[0]) == "fish":
			if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			j++
		case a == "--command":
			hasC = true
		case strings.HasPrefix(a, "--"):
		default:
			if strings.ContainsRune(a[1:], 'c') {
				hasC = true
			}
			if strings.ContainsRune(a[1:], 's') {
				hasS = true
			}
		}
	}
	switch {
	case hasC:
		if j < len(argv) {
			roles[j] = roleCode
		}
		return false
	case hasS || j >= len(argv):
		return true
	}
	roles[j] = roleProgram
	return readsStdin(argv[j])
}

// readsStdin reports whether a script operand names the process's own stdin.
func readsStdin(operand string) bool {
	switch operand {
	case "-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0":
		return true
	}
	return false
}

// interp describes an interpreter's options: single letters that take code (code) or choose a
// module or script (program), that take another argument (withArg), and long forms of each.
type interp struct {
	code, program, withArg string
	long, longProgram      []string
	caseless               bool
}

// scriptRoles handles the common interpreter shape: options, then either code from an option,
// or a script operand, or code from stdin (no operand, or "-").
func scriptRoles(argv []string, roles []argRole, j int, in interp) bool {
	for ; j < len(argv); j++ {
		a := argv[j]
		cmp := a
		if in.caseless {
			cmp = strings.ToLower(a)
		}
		if a == "--" {
			j++
			break
		}
		if a == "-" {
			return true
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		if name, _, hasValue := strings.Cut(cmp, "="); hasLong(in.long, name) {
			if hasValue {
				roles[j] = roleCode
			} else if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			return false
		} else if hasLong(in.longProgram, name) {
			if hasValue {
				roles[j] = roleProgram
			} else if j+1 < len(argv) {
				roles[j+1] = roleProgram
				j++
			}
			continue
		}
		if strings.HasPrefix(a, "--") || in.caseless {
			continue
		}
		// A cluster such as -Bc or -ne: the first letter that takes a value takes the rest
		// of the cluster, or the next argument when the cluster ends there.
		for k := 1; k < len(a); k++ {
			letter := a[k]
			role := roleArg
			switch {
			case strings.IndexByte(in.code, letter) >= 0:
				role = roleCode
			case strings.IndexByte(in.program, letter) >= 0:
				role = roleProgram
			case strings.IndexByte(in.withArg, letter) >= 0:
			default:
				continue
			}
			if k+1 < len(a) {
				roles[j] = max(roles[j], role)
			} else if j+1 < len(argv) {
				j++
				roles[j] = role
			}
			if role == roleCode {
				return false
			}
			break
		}
	}
	if j >= len(argv) {
		return true
	}
	roles[j] = roleProgram
	return readsStdin(argv[j])
}

func hasLong(list []string, name string) bool {
	for _, l := range list {
		if l == name {
			return true
		}
	}
	return false
}

// awkRoles: the first operand is the program unless -f names a file; -e/--source is code too.
func awkRoles(argv []string, roles []argRole, j int) bool {
	fromFile := false
	for ; j < len(argv); j++ {
		a := argv[j]
		if a == "--" {
			j++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		switch {
		case a == "-f" || a == "--file" || a == "-i" || a == "--include" || a == "-l" || a == "--load":
			if j+1 < len(argv) {
				roles[j+1] = roleProgram
			}
			fromFile = true
			j++
		case a == "-e" || a == "--source":
			if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			fromFile = true
			j++
		case strings.HasPrefix(a, "-f") || strings.HasPrefix(a, "-e") || strings.HasPrefix(a, "--source="):
			roles[j] = roleCode
			fromFile = true
		case a == "-v" || a == "-F" || a == "--assign" || a == "--field-separator":
			j++
		}
	}
	if !fromFile && j < len(argv) {
		roles[j] = roleCode
	}
	return false
}

// sedRoles: a script comes from -e or --expression (code), -f (a file), or the first operand.
// GNU sed's e command runs a shell, so a script is code.
func sedRoles(argv []string, roles []argRole, j int) bool {
	script := false
	for ; j < len(argv); j++ {
		a := argv[j]
		if a == "--" {
			j++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		switch {
		case a == "--expression" || a == "--file" || a == "--line-length":
			role := map[string]argRole{"--expression": roleCode, "--file": roleProgram, "--line-length": roleArg}[a]
			if j+1 < len(argv) {
				roles[j+1] = role
			}
			script = script || role != roleArg
			j++
		case strings.HasPrefix(a, "--expression=") || strings.HasPrefix(a, "--file="):
			roles[j] = roleCode
			script = true
		case strings.HasPrefix(a, "--"):
		default:
			for k := 1; k < len(a); k++ {
				role, takes := roleArg, false
				switch a[k] {
				case 'e':
					role, takes = roleCode, true
				case 'f':
					role, takes = roleProgram, true
				case 'l':
					takes = true
				}
				if !takes {
					continue
				}
				script = script || role != roleArg
				if k+1 < len(a) {
					roles[j] = max(roles[j], role)
				} else if j+1 < len(argv) {
					j++
					roles[j] = role
				}
				break
			}
		}
	}
	if !script && j < len(argv) {
		roles[j] = roleCode
	}
	return false
}

// envRole is what an environment variable's value is to the programs that read it: most are
// data, but some are run as code by a shell, git, an editor or a runtime (BASH_ENV,
// GIT_SSH_COMMAND, NODE_OPTIONS, ...) and some choose what runs (PATH, LD_PRELOAD, PYTHONPATH).
func envRole(name string) argRole {
	n := strings.ToUpper(name)
	switch n {
	case "BASH_ENV", "ENV", "PROMPT_COMMAND", "PS4", "SHELLOPTS", "BASHOPTS",
		"GIT_SSH_COMMAND", "GIT_PROXY_COMMAND", "GIT_EXTERNAL_DIFF", "GIT_PAGER", "GIT_EDITOR",
		"GIT_SEQUENCE_EDITOR", "GIT_ASKPASS", "SSH_ASKPASS", "PAGER", "EDITOR", "VISUAL", "MANPAGER",
		"LESSOPEN", "LESSCLOSE", "BROWSER", "NODE_OPTIONS", "PERL5OPT", "RUBYOPT", "PYTHONSTARTUP",
		"PYTHONWARNINGS", "PYTHONBREAKPOINT", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
		"MAKEFLAGS", "GIT_CONFIG_PARAMETERS":
		return roleCode
	case "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GCONV_PATH", "PYTHONPATH", "PYTHONHOME",
		"PYTHONUSERBASE", "NODE_PATH", "PERL5LIB", "PERLLIB", "RUBYLIB", "GEM_PATH", "GEM_HOME", "CLASSPATH",
		"GIT_EXEC_PATH", "GIT_SSH", "GIT_TEMPLATE_DIR", "GIT_CONFIG", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
		"ZDOTDIR":
		return roleProgram
	}
	switch {
	case strings.HasPrefix(n, "GIT_CONFIG_KEY_"), strings.HasPrefix(n, "GIT_CONFIG_VALUE_"), strings.HasPrefix(n, "BASH_FUNC_"):
		return roleCode
	case strings.HasPrefix(n, "DYLD_"), strings.HasPrefix(n, "LD_"):
		return roleProgram
	}
	return roleArg
}

// sshOption gives the role of the value of ssh's -o, -F or -J at argv[j]: options whose value
// is a command (ProxyCommand, LocalCommand, KnownHostsCommand, RemoteCommand) are code, an
// option named by the data, a config file (which may hold such commands) or a jump host choose
// what runs; other options take data.
func sshOption(argv []string, j int) (argRole, bool) {
	a := argv[j]
	var value string
	switch {
	case a == "-o" || a == "-F" || a == "-J":
		if j+1 >= len(argv) {
			return roleArg, false
		}
		value = argv[j+1]
	case strings.HasPrefix(a, "-o") || strings.HasPrefix(a, "-F") || strings.HasPrefix(a, "-J"):
		value = a[2:]
	default:
		return roleArg, false
	}
	if a[1] == 'F' || a[1] == 'J' {
		return roleProgram, true
	}
	key, _, _ := strings.Cut(strings.TrimSpace(value), "=")
	key, _, _ = strings.Cut(key, " ")
	switch k := strings.ToLower(key); {
	case strings.Contains(key, "${{"):
		return roleProgram, true
	case strings.HasSuffix(k, "command"):
		return roleCode, true
	case k == "include" || k == "identityagent" || k == "pkcs11provider" || k == "securitykeyprovider" || k == "proxyjump" || k == "hostname":
		return roleProgram, true
	}
	return roleArg, true
}

// gitRoles: git's -c sets configuration, and many keys run commands (core.pager,
// core.sshCommand, alias.*, credential.helper, diff.*.textconv, ...), so a -c value is code;
// --upload-pack, --receive-pack and --exec name programs on the other side, which run as a
// shell command.
func gitRoles(argv []string, roles []argRole, j int) {
	for ; j < len(argv); j++ {
		a := argv[j]
		switch {
		case a == "-c" || a == "--config-env":
			if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			j++
		case strings.HasPrefix(a, "--config-env="), strings.HasPrefix(a, "-c") && len(a) > 2:
			roles[j] = roleCode
		case a == "-C" || a == "--git-dir" || a == "--work-tree" || a == "--namespace":
			j++
		case strings.HasPrefix(a, "--exec-path="):
			roles[j] = roleProgram
		case strings.HasPrefix(a, "-"):
		default:
			opts := map[string]argRole{"--upload-pack": roleCode, "--receive-pack": roleCode, "--exec": roleCode, "-u": roleCode,
				"--extcmd": roleCode, "-x": roleCode, "--tool": roleProgram}
			if a == "clone" {
				// clone -c sets configuration before the first fetch: core.sshCommand and the like.
				opts["-c"], opts["--config"] = roleCode, roleCode
			}
			optionRoles(argv, roles, j+1, opts)
			return
		}
	}
}

// tarRoles: tar runs commands given by --to-command, --use-compress-program (-I),
// --checkpoint-action=exec=, --info-script (-F), --new-volume-script and --rsh-command.
func tarRoles(argv []string, roles []argRole, j int) {
	optionRoles(argv, roles, j, map[string]argRole{"--to-command": roleCode, "--use-compress-program": roleCode, "-I": roleCode,
		"--checkpoint-action": roleCode, "--info-script": roleCode, "-F": roleCode, "--new-volume-script": roleCode, "--rsh-command": roleCode})
}

// optionRoles marks the values of the listed options (as the next argument, or after "=" for
// a long option, or stuck to a short one) with their roles, anywhere in the arguments.
func optionRoles(argv []string, roles []argRole, j int, opts map[string]argRole) {
	for ; j < len(argv); j++ {
		a := argv[j]
		if a == "--" {
			return
		}
		if role, ok := opts[a]; ok {
			if j+1 < len(argv) {
				roles[j+1] = max(roles[j+1], role)
			}
			j++
			continue
		}
		if name, _, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "--") {
			if role, ok := opts[name]; ok {
				roles[j] = max(roles[j], role)
			}
			continue
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			// A cluster such as -avze: the first listed letter takes the rest of the
			// cluster, or the next argument when it ends the cluster.
			for k := 1; k < len(a); k++ {
				role, ok := opts["-"+a[k:k+1]]
				if !ok {
					continue
				}
				if k+1 < len(a) {
					roles[j] = max(roles[j], role)
				} else if j+1 < len(argv) {
					roles[j+1] = max(roles[j+1], role)
					j++
				}
				break
			}
		}
	}
}

func hasAny(args []string, names ...string) bool {
	for _, a := range args {
		for _, n := range names {
			if a == n || strings.HasPrefix(a, n+"=") {
				return true
			}
		}
	}
	return false
}

// sqliteRoles: sqlite3 [options] [database] [sql...]: the SQL operands, -cmd's value and, with
// no SQL operand, stdin are code (".shell" and ".system" run commands); -init names a file of it.
func sqliteRoles(argv []string, roles []argRole, j int) bool {
	for ; j < len(argv); j++ {
		a := strings.TrimPrefix(argv[j], "-")
		if !strings.HasPrefix(argv[j], "-") {
			break
		}
		switch a {
		case "cmd":
			if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			j++
		case "init":
			if j+1 < len(argv) {
				roles[j+1] = roleProgram
			}
			j++
		case "separator", "newline", "nullvalue", "mmap", "heap", "lookaside", "pagecache", "maxsize", "vfs", "A", "escape":
			j++
		}
	}
	if j < len(argv) {
		j++ // the database file
	}
	if j >= len(argv) {
		return true
	}
	for ; j < len(argv); j++ {
		roles[j] = roleCode
	}
	return false
}

// interpreters are programs that run code given as an argument or on stdin.
var interpreters = map[string]bool{
	"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "ash": true, "mksh": true, "fish": true,
	"csh": true, "tcsh": true, "busybox": true, "env": true, "python": true, "python2": true, "pypy": true,
	"node": true, "nodejs": true, "bun": true, "deno": true, "perl": true, "ruby": true, "php": true, "lua": true,
	"rscript": true, "julia": true, "awk": true, "gawk": true, "sed": true, "psql": true, "mysql": true, "sqlite": true,
}

// makeRoles: -f names a makefile, --eval (-E) is make code, and every operand is a target or
// an assignment; -C, -I, -j, -l, -o, -W take a value.
func makeRoles(argv []string, roles []argRole, j int) {
	for ; j < len(argv); j++ {
		a := argv[j]
		switch {
		case a == "-f" || a == "--file" || a == "--makefile":
			if j+1 < len(argv) {
				roles[j+1] = roleProgram
			}
			j++
		case a == "-E" || a == "--eval":
			if j+1 < len(argv) {
				roles[j+1] = roleCode
			}
			j++
		case strings.HasPrefix(a, "--eval=") || strings.HasPrefix(a, "-E") && len(a) > 2:
			roles[j] = roleCode
		case strings.HasPrefix(a, "--file=") || strings.HasPrefix(a, "--makefile=") || strings.HasPrefix(a, "-f") && len(a) > 2:
			roles[j] = roleProgram
		case a == "-C" || a == "-I" || a == "-o" || a == "-W" || a == "--directory" || a == "--include-dir":
			j++
		case strings.HasPrefix(a, "-"):
		default:
			roles[j] = roleProgram
		}
	}
}
