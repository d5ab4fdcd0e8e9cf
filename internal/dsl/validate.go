package dsl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/pipectl/pipectl/internal/domain"
)

// Validator parses and checks pipeline files. It caches the compiled pipeline schema, the CEL
// environment and every referenced schema file, so one Validator should serve a whole process.
// It is safe for concurrent use.
type Validator struct {
	exprs   *Expressions
	schemas *schemaStore

	// The pipeline schema takes longer to compile than a small file takes to check, so it
	// compiles in the background and files wait for it only at the step that needs it.
	schemaReady chan struct{}
	schema      *pipelineSchema
	schemaErr   error

	// families tells which family a step's model belongs to (see SetModelFamilies).
	families ModelFamilies
}

// NewValidator builds a Validator.
func NewValidator() (*Validator, error) {
	v := &Validator{schemas: newSchemaStore(), schemaReady: make(chan struct{})}
	go func() {
		v.schema, v.schemaErr = loadPipelineSchema()
		close(v.schemaReady)
	}()
	x, err := NewExpressions()
	if err != nil {
		return nil, err
	}
	v.exprs = x
	return v, nil
}

func (v *Validator) pipelineSchema() (*pipelineSchema, error) {
	<-v.schemaReady
	return v.schema, v.schemaErr
}

// Expressions returns the CEL environment the validator compiles with.
func (v *Validator) Expressions() *Expressions { return v.exprs }

// UnreadableError means a path could not be read at all (exit code 2, not 1).
type UnreadableError struct {
	Path string
	Err  error
}

func (e *UnreadableError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *UnreadableError) Unwrap() error { return e.Err }

// ParseFile reads and validates one pipeline file. The pipeline is nil when any diagnostic is
// an error.
func (v *Validator) ParseFile(path string) (*domain.Pipeline, []Diagnostic, error) {
	src, err := readLimited(path)
	if err != nil && !strings.HasPrefix(err.Error(), "larger than") {
		return nil, nil, &UnreadableError{Path: path, Err: err}
	}
	if err != nil {
		return nil, []Diagnostic{{File: path, Line: 1, Column: 1, Severity: SeverityError, Message: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}}, nil
	}
	p, diags := v.Parse(path, src)
	return p, diags, nil
}

// Parse validates a pipeline held in memory; path names it in diagnostics and anchors relative
// $ref paths.
func (v *Validator) Parse(path string, src []byte) (p *domain.Pipeline, diags []Diagnostic) {
	defer func() {
		// A bug in a check must not take down a CI run over hundreds of files: report it
		// against the file and carry on.
		if r := recover(); r != nil {
			p = nil
			diags = append(diags, Diagnostic{File: path, Line: 1, Column: 1, Severity: SeverityError,
				Message: fmt.Sprintf("internal error while validating (please report it): %v", r)})
		}
	}()
	doc := parseDocument(path, src)
	if doc.root == nil {
		diags = SortDiagnostics(doc.diags)
		fillEnds(src, diags)
		return nil, diags
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	v.prefetchSchemas(doc, filepath.Dir(abs))
	go v.precompile(doc.root)
	dc := &decoder{doc: doc, schemas: v.schemas, dir: filepath.Dir(abs), absPath: abs}
	p = dc.decode()
	deps := checkDAG(doc, p)
	c := newChecker(doc, p, v.exprs, deps)
	sites := c.check()
	c.checkTaint(sites)
	strictWarnings(doc, p)
	familyWarnings(doc, p, v.families)
	ps, err := v.pipelineSchema()
	if err != nil {
		doc.errorAt(1, 1, "", "internal error: %v", err)
	} else {
		ps.check(doc)
	}
	diags = SortDiagnostics(doc.diags)
	fillEnds(src, diags)
	if HasErrors(diags) {
		return nil, diags
	}
	return p, diags
}

// prefetchSchemas starts compiling the schema files a document references, each on its own
// goroutine, so that a cold process compiles them side by side instead of one after another.
func (v *Validator) prefetchSchemas(doc *document, dir string) {
	root, _ := doc.root.(map[string]any)
	refs := []any{valueAt(root, "/inputs/$ref")}
	for _, s := range list(root["steps"]) {
		refs = append(refs, valueAt(s, "/output/schema/$ref"), valueAt(s, "/schema/$ref"))
	}
	for _, r := range refs {
		ref, ok := r.(string)
		if !ok || ref == "" || strings.HasPrefix(ref, "#") || strings.Contains(ref, "://") {
			continue
		}
		go v.schemas.loadFile(filepath.Clean(filepath.Join(dir, filepath.FromSlash(ref))))
	}
}

// precompile compiles every expression of a document into the cache while the decoder waits
// for schema files, so that the checks find them ready. Rules are bare CEL; everything else is
// a template.
func (v *Validator) precompile(root any) {
	var walk func(key string, val any)
	walk = func(key string, val any) {
		switch x := val.(type) {
		case string:
			if key == "expr" {
				v.exprs.Compile(unwrapExpression(x))
				return
			}
			if t, err := ParseTemplate(x); err == nil {
				for _, ph := range t.Placeholders {
					v.exprs.Compile(ph.Expr)
				}
			}
		case map[string]any:
			for k, e := range x {
				walk(k, e)
			}
		case []any:
			for _, e := range x {
				walk(key, e)
			}
		}
	}
	walk("", root)
}

// FileResult is the outcome of validating one file.
type FileResult struct {
	Path        string
	Diagnostics []Diagnostic
	// Err is set when the file could not be read.
	Err error
}

// Discover expands files and folders into the pipeline files to validate. Files named
// explicitly are always validated; inside folders, only *.yaml and *.yml files whose kind is
// Pipeline are. Symlinked folders are followed once: a loop is reported, not walked forever.
func Discover(paths []string) ([]string, []error) {
	var files []string
	var errs []error
	seen := map[string]bool{}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			errs = append(errs, &UnreadableError{Path: p, Err: unwrapPathError(err)})
			continue
		}
		if !info.IsDir() {
			files = append(files, p)
			continue
		}
		walkDir(p, seen, &files, &errs)
	}
	return files, errs
}

func walkDir(root string, seen map[string]bool, files *[]string, errs *[]error) {
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		*errs = append(*errs, &UnreadableError{Path: root, Err: unwrapPathError(err)})
		return
	}
	if seen[real] {
		return
	}
	seen[real] = true
	entries, err := os.ReadDir(root)
	if err != nil {
		*errs = append(*errs, &UnreadableError{Path: root, Err: unwrapPathError(err)})
		return
	}
	for _, e := range entries {
		path := filepath.Join(root, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		mode := e.Type()
		if mode&fs.ModeSymlink != 0 {
			info, err := os.Stat(path)
			if err != nil {
				*errs = append(*errs, &UnreadableError{Path: path, Err: unwrapPathError(err)})
				continue
			}
			mode = info.Mode().Type()
		}
		switch {
		case mode.IsDir():
			walkDir(path, seen, files, errs)
		case mode.IsRegular() && isYAMLName(e.Name()) && looksLikePipeline(path):
			*files = append(*files, path)
		}
	}
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

func isYAMLName(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// looksLikePipeline reads just enough of a file to see its top-level kind. A file that is not
// YAML at all, or claims no kind, is still validated when it mentions apiVersion pipectl/.
func looksLikePipeline(path string) bool {
	src, err := readLimited(path)
	if err != nil {
		return true // let validation report it
	}
	for _, line := range strings.Split(string(src), "\n") {
		t := strings.TrimSpace(line)
		if line != t && !strings.HasPrefix(line, "kind:") {
			continue
		}
		if v, ok := strings.CutPrefix(t, "kind:"); ok {
			v = strings.Trim(strings.TrimSpace(strings.SplitN(v, "#", 2)[0]), `"'`)
			return v == domain.KindPipeline
		}
	}
	return strings.Contains(string(src), "apiVersion: pipectl/")
}

// ValidateFiles checks files in parallel, one worker per CPU, and returns results in input order.
func (v *Validator) ValidateFiles(files []string) []FileResult {
	results := make([]FileResult, len(files))
	work := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(runtime.GOMAXPROCS(0), len(files))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				_, diags, err := v.ParseFile(files[i])
				results[i] = FileResult{Path: files[i], Diagnostics: diags, Err: err}
			}
		}()
	}
	for i := range files {
		work <- i
	}
	close(work)
	wg.Wait()
	return results
}
