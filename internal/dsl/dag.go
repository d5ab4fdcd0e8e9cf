package dsl

import (
	"strings"

	"github.com/pipectl/pipectl/internal/domain"
)

// checkDAG reports duplicate ids, unknown and self needs, and cycles. It returns each step's
// transitive dependencies, or nil when the graph is not a DAG.
func checkDAG(d *document, p *domain.Pipeline) map[string]map[string]bool {
	index := map[string]int{}
	ok := true
	for i, s := range p.Steps {
		if s.ID == "" {
			ok = false
			continue
		}
		if first, dup := index[s.ID]; dup {
			d.errorf(pointerJoin(pointerJoin("/steps", i), "id"), "duplicate step id %q (first used by steps[%d])", s.ID, first)
			ok = false
			continue
		}
		index[s.ID] = i
	}
	for i, s := range p.Steps {
		for j, n := range s.Needs {
			ptr := pointerJoin(pointerJoin(pointerJoin("/steps", i), "needs"), j)
			switch _, known := index[n]; {
			case n == s.ID:
				d.errorf(ptr, "step %q needs itself", s.ID)
				ok = false
			case !known:
				msg := "needs unknown step %q"
				if best := closest(n, keys(index)); best != "" {
					msg += "; did you mean \"" + best + "\"?"
				}
				d.errorf(ptr, msg, n)
				ok = false
			}
		}
	}
	if !ok {
		return nil
	}
	if cycle := findCycle(p, index); cycle != nil {
		first := index[cycle[0]]
		d.errorf(pointerJoin(pointerJoin("/steps", first), "needs"), "dependency cycle: %s", strings.Join(cycle, " -> "))
		return nil
	}
	deps := map[string]map[string]bool{}
	var visit func(id string) map[string]bool
	visit = func(id string) map[string]bool {
		if got, done := deps[id]; done {
			return got
		}
		all := map[string]bool{}
		for _, n := range p.Steps[index[id]].Needs {
			all[n] = true
			for t := range visit(n) {
				all[t] = true
			}
		}
		deps[id] = all
		return all
	}
	for _, s := range p.Steps {
		visit(s.ID)
	}
	return deps
}

// findCycle returns one cycle as a list of ids that starts and ends with the same id.
func findCycle(p *domain.Pipeline, index map[string]int) []string {
	const (
		unseen = iota
		onStack
		done
	)
	state := map[string]int{}
	var stack []string
	var cycle []string
	var dfs func(id string) bool
	dfs = func(id string) bool {
		state[id] = onStack
		stack = append(stack, id)
		for _, n := range p.Steps[index[id]].Needs {
			switch state[n] {
			case onStack:
				for i, s := range stack {
					if s == n {
						cycle = append(append([]string{}, stack[i:]...), n)
						return true
					}
				}
			case unseen:
				if dfs(n) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[id] = done
		return false
	}
	for _, s := range p.Steps {
		if state[s.ID] == unseen && dfs(s.ID) {
			return cycle
		}
	}
	return nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
