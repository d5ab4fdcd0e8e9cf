package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/ledger"
)

// faultPG is the PostgreSQL server a fault case may break. As root with the server binaries at
// hand it is a private cluster of the test's own (the shared server on 5432 is used by other
// tests at the same time and must never be restarted), restarted with pg_ctl; otherwise it is a
// schema of its own on PIPECTL_TEST_POSTGRES, and a "restart" terminates every connection of
// the pipectl processes there (pg_terminate_backend) instead.
type faultPG struct {
	mode string // "private cluster" or "pg_terminate_backend"
	dsn  string // what the pipectl processes use
	// private cluster
	bin, data, logFile string
	// terminate mode
	admin   string
	appName string
}

// postgresBin finds the newest installed server binaries (Debian's layout), or
// PIPECTL_FAULTS_PGBIN.
func postgresBin() string {
	if d := os.Getenv("PIPECTL_FAULTS_PGBIN"); d != "" {
		return d
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a > b
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d
		}
	}
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newFaultPG starts a private cluster when it can, else falls back to the shared server.
func newFaultPG(t *testing.T) *faultPG {
	t.Helper()
	bin := postgresBin()
	pgUser, uerr := user.Lookup("postgres")
	forced := os.Getenv("PIPECTL_FAULTS_PG") == "terminate"
	if os.Geteuid() == 0 && bin != "" && uerr == nil && !forced {
		return startPrivatePG(t, bin, pgUser)
	}
	shared := os.Getenv("PIPECTL_TEST_POSTGRES")
	if shared == "" {
		t.Skip("no private PostgreSQL cluster (needs root and the server binaries) and PIPECTL_TEST_POSTGRES is not set")
	}
	why := "not root"
	switch {
	case forced:
		why = "PIPECTL_FAULTS_PG=terminate"
	case bin == "":
		why = "no PostgreSQL server binaries"
	case uerr != nil:
		why = "no postgres user"
	}
	t.Logf("fault mode: pg_terminate_backend of the pipectl connections on PIPECTL_TEST_POSTGRES (%s, so no private cluster to restart)", why)
	dsn := ledger.PostgresTestSchema(t, shared)
	u, _ := url.Parse(dsn)
	q := u.Query()
	app := "pipectl_faults_" + strconv.Itoa(os.Getpid()) + "_" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	return &faultPG{mode: "pg_terminate_backend", dsn: u.String(), admin: shared, appName: app}
}

func startPrivatePG(t *testing.T, bin string, pgUser *user.User) *faultPG {
	t.Helper()
	dir, err := os.MkdirTemp("", "pipectl-faults-pg-")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	pg := &faultPG{mode: "private cluster", bin: bin, data: filepath.Join(dir, "data"), logFile: filepath.Join(dir, "server.log")}
	t.Cleanup(func() {
		pg.ctl(t, "-m", "immediate", "stop")
		os.RemoveAll(dir)
	})
	if out, err := pg.asPostgres(filepath.Join(bin, "initdb"), "-D", pg.data, "-A", "trust", "-U", "postgres", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	// fsync stays on: the point is what survives a crash of the server.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=200", port, dir)
	if err := pg.ctl(t, "-o", opts, "start"); err != nil {
		log, _ := os.ReadFile(pg.logFile)
		t.Fatalf("%v\n%s", err, log)
	}
	pg.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	t.Logf("fault mode: a private PostgreSQL cluster (%s) on port %d, restarted with pg_ctl", bin, port)
	return pg
}

func (pg *faultPG) asPostgres(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	cmd.Dir = filepath.Dir(pg.data)
	return cmd
}

func (pg *faultPG) ctl(t *testing.T, args ...string) error {
	t.Helper()
	// The server's output goes to its log file (-l): a restarted postmaster would otherwise
	// inherit pg_ctl's stdout and keep a pipe to the test open for ever.
	cmd := pg.asPostgres(filepath.Join(pg.bin, "pg_ctl"), append([]string{"-D", pg.data, "-l", pg.logFile, "-w", "-t", "60"}, args...)...)
	out, err := os.CreateTemp("", "pg_ctl-out-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		text, _ := os.ReadFile(out.Name())
		return fmt.Errorf("pg_ctl %s: %v\n%s", strings.Join(args, " "), err, text)
	}
	return nil
}

// fault breaks every connection: a restart of the private cluster (fast: a clean shutdown
// that disconnects every session; immediate: a crash, then recovery from the WAL), or the
// termination of every pipectl backend on the shared server. It returns when the server
// accepts connections again.
func (pg *faultPG) fault(t *testing.T, immediate bool) (string, error) {
	t.Helper()
	if pg.mode == "private cluster" {
		mode := "fast"
		if immediate {
			mode = "immediate"
		}
		return "pg_ctl restart -m " + mode, pg.ctl(t, "-m", mode, "restart")
	}
	db, err := sqlx.Open("pgx", pg.admin)
	if err != nil {
		return "", err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	err = db.GetContext(ctx, &n, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, pg.appName)
	return fmt.Sprintf("pg_terminate_backend of %d connections", n), err
}
