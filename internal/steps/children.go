package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// reapTimeout bounds how long a new attempt waits for a previous owner's children to die.
const reapTimeout = 10 * time.Second

// childRecord is the file that names the process group of a step's running child. It is
// keyed by the step key, which a retry, a resume and a takeover share, so the next attempt
// of the same step finds it. An OS crash kills the children too, so the file need not survive
// one and is not synced.
type childRecord struct {
	path string
}

type childInfo struct {
	PGID int `json:"pgid"`
	// Start is the leader's start time in clock ticks since boot (/proc/PID/stat field 22):
	// with it a recycled pid is not mistaken for the child.
	Start string `json:"start"`
	Owner int    `json:"owner_pid"`
}

func (e Exec) childRecord(call *domain.StepCall) (childRecord, error) {
	if e.ChildDir == "" || call.StepKey == "" {
		return childRecord{}, nil
	}
	if err := PrivateDir(e.ChildDir); err != nil {
		return childRecord{}, domain.Permanentf("the folder for child records: %v (set XDG_STATE_HOME to a private folder)", err)
	}
	sum := sha256.Sum256([]byte(call.StepKey))
	return childRecord{path: filepath.Join(e.ChildDir, hex.EncodeToString(sum[:16])+".json")}, nil
}

// write records a started child. A child that cannot be recorded is not left running.
func (r childRecord) write(pid int) error {
	if r.path == "" {
		return nil
	}
	b, _ := json.Marshal(childInfo{PGID: pid, Start: procStart(pid), Owner: os.Getpid()})
	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, r.path)
}

func (r childRecord) remove() {
	if r.path != "" {
		_ = os.Remove(r.path)
	}
}

// clear makes sure the process group a previous attempt recorded is gone: it kills what is
// left of it and waits until nothing of it runs. A group that will not die fails the attempt
// as transient, so the step is not run twice at once.
func (r childRecord) clear(ctx context.Context) error {
	if r.path == "" {
		return nil
	}
	b, err := os.ReadFile(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return domain.Transient(fmt.Errorf("reading the record of the previous child: %w", err))
	}
	if !ownedBySelf(r.path) {
		// Planted by someone else: acting on it would kill a group they chose.
		return domain.Permanentf("the child record %s is not a private file of this user; remove it", r.path)
	}
	var c childInfo
	if json.Unmarshal(b, &c) != nil || c.PGID <= 1 {
		r.remove() // unreadable: written by nothing we know; nothing to kill
		return nil
	}
	deadline := time.Now().Add(reapTimeout)
	for {
		if !groupAlive(c.PGID, c.Start) {
			r.remove()
			return nil
		}
		_ = syscall.Kill(-c.PGID, syscall.SIGKILL)
		if time.Now().After(deadline) {
			return domain.Transient(fmt.Errorf("the previous attempt's process group %d is still alive %s after SIGKILL; not starting a second copy", c.PGID, reapTimeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// groupAlive reports whether a process of the recorded group still runs (zombies do not
// count). A process whose pid is the group id but whose start time differs means the id was
// free and given to someone else: the group is gone. Members started before the leader
// cannot be ours.
func groupAlive(pgid int, start string) bool {
	if start == "" {
		return false // no /proc when it was recorded: nothing can be verified, so nothing is killed
	}
	leaderStart, _ := strconv.ParseUint(start, 10, 64)
	if s := procStart(pgid); s != "" && s != start {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if !ok || st.pgrp != pgid || st.state == "Z" || st.state == "X" {
			continue
		}
		if st.start >= leaderStart {
			return true
		}
	}
	return false
}

type procStat struct {
	state string
	pgrp  int
	start uint64
}

// readStat parses /proc/PID/stat. The command name (field 2) may hold spaces and parentheses;
// the fields resume after the last ')': state is field 3, pgrp field 5, starttime field 22.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return procStat{}, false
	}
	pgrp, err1 := strconv.Atoi(f[2])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	return procStat{state: f[0], pgrp: pgrp, start: start}, true
}

// procStart is a process's start time as recorded, or "" when it cannot be read.
func procStart(pid int) string {
	st, ok := readStat(pid)
	if !ok {
		return ""
	}
	return strconv.FormatUint(st.start, 10)
}

// ownedBySelf reports whether path is a regular file (not a link) owned by this process's
// user and unreadable to others, as write makes it.
func ownedBySelf(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// PrivateDir creates dir (mode 0700) when missing and checks that it is a real folder of this
// user that no one else can write to: the records in it decide which processes get killed.
func PrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(filepath.Clean(dir))
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s must be a folder owned by this user and writable by no one else", dir)
	}
	return nil
}
