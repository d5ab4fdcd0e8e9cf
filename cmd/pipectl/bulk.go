package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

// submitted is submit's --format json document for one run.
type submitted struct {
	Duplicate bool            `json:"duplicate"`
	Run       operate.RunView `json:"run"`
}

type bulkOptions struct {
	format string
	batch  int
}

// submitMany is submit --inputs: the same pipeline checks and preflight as one submission, then
// operate.SubmitMany over the lines; refusals stream to stderr as file:line diagnostics, the
// summary goes to stdout.
func (a *app) submitMany(ctx context.Context, path, inputsArg string, noPreflight bool, opts bulkOptions) error {
	if opts.batch < 1 || opts.batch > ledger.MaxBatchRuns {
		return usageErrorf("--batch-size must be between 1 and %d", ledger.MaxBatchRuns)
	}
	v, err := a.newValidator()
	if err != nil {
		return err
	}
	p, err := a.loadPipeline(v, path)
	if err != nil {
		return err
	}
	limit, err := a.inputLimit()
	if err != nil {
		return err
	}
	if err := a.submitPreflight(p, noPreflight); err != nil {
		return err
	}
	var lines io.Reader = a.stdin
	source := "stdin"
	if inputsArg != "-" {
		f, err := os.Open(inputsArg)
		if err != nil {
			return &exitError{code: domain.ExitUsage, err: fmt.Errorf("--inputs: %w", err)}
		}
		defer f.Close()
		lines, source = f, inputsArg
	}
	store, err := a.openLedger(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	o := a.ops(store, nil)
	o.Validator = v
	res, err := o.SubmitMany(ctx, a.g.actorName(), operate.BulkRequest{
		Pipeline: p, Lines: lines, Source: source, MaxLineBytes: int(min(limit, int64(maxInt))), BatchRuns: opts.batch,
		OnRefused: func(r operate.LineRefusal) {
			at := strconv.Itoa(r.Line)
			if r.Through > r.Line {
				at += "-" + strconv.Itoa(r.Through)
			}
			fmt.Fprintf(a.stderr, "%s:%s: refused (%s): %s\n", source, at, r.Reason, oneLine(r.Error))
		},
	})
	if err != nil && operate.KindOf(err) == operate.KindDisabled {
		return opError(err) // nothing was read
	}
	if werr := a.writeBulkSummary(res, opts.format); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return opError(err)
	}
	return bulkExit(res)
}

const maxInt = int(^uint(0) >> 1)

// bulkExit is the exit code of a bulk submission: 0 when every line was created or a
// duplicate, 4 when the ledger refused a line (a key with another input, the kill switch), else
// 1 when a line was invalid. The summary is printed already; the error adds one line.
func bulkExit(res *operate.BulkResult) error {
	if res.Refused == 0 {
		return nil
	}
	err := fmt.Errorf("%d of %d lines of %s were refused", res.Refused, res.Lines, res.Source)
	switch res.Worst {
	case operate.KindConflict, operate.KindDisabled:
		return &exitError{code: domain.ExitRefused, err: err}
	}
	return &exitError{code: domain.ExitFailed, err: err}
}

func (a *app) writeBulkSummary(res *operate.BulkResult, format string) error {
	if format == "json" {
		return writeJSON(a.jsonOut, res)
	}
	fmt.Fprintln(a.stdout, res.String())
	if res.Refused > 0 {
		more := ""
		if res.RefusalsNotListed > 0 {
			more = fmt.Sprintf(" and %d more", res.RefusalsNotListed)
		}
		fmt.Fprintf(a.stdout, "  refused lines: %s%s (the reasons are on stderr)\n", lineRanges(res.Refusals), more)
	}
	return nil
}

// lineRanges lists the lines of refusals compactly: 4, 9-11, 17.
func lineRanges(rs []operate.LineRefusal) string {
	var parts []string
	for i := 0; i < len(rs); {
		from, to := rs[i].Line, max(rs[i].Through, rs[i].Line)
		j := i + 1
		for ; j < len(rs) && rs[j].Line == to+1; j++ {
			to = max(rs[j].Through, rs[j].Line)
		}
		if from == to {
			parts = append(parts, strconv.Itoa(from))
		} else {
			parts = append(parts, strconv.Itoa(from)+"-"+strconv.Itoa(to))
		}
		i = j
	}
	return strings.Join(parts, ", ")
}
