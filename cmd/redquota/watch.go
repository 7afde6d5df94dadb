package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// ANSI sequences, written only when stdout is a terminal.
const (
	clearScreen = "\x1b[H\x1b[2J"
	reverse     = "\x1b[7m"
	plain       = "\x1b[0m"
)

// watch shows the quotas every interval until Ctrl-C (or --count frames).
// On a terminal each frame replaces the last and holds are in reverse video;
// otherwise frames follow one another, a blank line apart. A Redis that
// stops answering after the first frame is shown as such, and watched again
// at every refresh: an operator watching a fleet through a Redis restart or
// failover keeps the view.
func (a *app) watch(ctx context.Context, names []string) int {
	tick := time.NewTicker(a.o.interval)
	defer tick.Stop()
	for frame := 1; ; frame++ {
		vs, err := a.views(ctx, names)
		if err != nil && ctx.Err() != nil {
			break
		}
		if err != nil && frame == 1 {
			return a.fail("watch", err)
		}
		var b strings.Builder
		if a.tty {
			b.WriteString(clearScreen)
		} else if frame > 1 {
			b.WriteString("\n")
		}
		if err != nil {
			fmt.Fprintf(&b, "redquota watch  prefix %s  %s UTC (local)  every %s, Ctrl-C to quit\n\n",
				a.o.prefix, time.Now().UTC().Format("15:04:05"), a.o.interval)
			fmt.Fprintf(&b, "Redis unreachable, trying again every %s: %v\n", a.o.interval, err)
		} else {
			a.frame(&b, vs)
		}
		_, _ = io.WriteString(a.stdout, b.String())
		if a.o.count > 0 && frame >= a.o.count {
			if err != nil {
				return exitUsage
			}
			return exitOK
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	fmt.Fprintln(a.stdout)
	return exitOK
}

// frame writes one refresh: a header on Redis's clock, then a bar per limit.
func (a *app) frame(w io.Writer, vs []view) {
	at := time.Now()
	if len(vs) > 0 {
		at = vs[0].state.At
	}
	fmt.Fprintf(w, "redquota watch  prefix %s  %s UTC (Redis)  every %s, Ctrl-C to quit\n\n",
		a.o.prefix, at.UTC().Format("15:04:05"), a.o.interval)
	if len(vs) == 0 {
		fmt.Fprintln(w, "no quotas yet (a quota appears once a process has decided on it)")
		return
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	for _, v := range vs {
		for _, r := range v.rows {
			if r.hold > 0 {
				fmt.Fprintf(tw, "%s\tHOLD\t%s\t%s\t\n", r.quota, heldMark+dur(r.hold)+" !!", holdNote(r.reason))
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d %s\t%s %s\t\n", r.quota, limitName(r.limit), bar(r.use(), 30),
				r.used, r.max, pct(r.use()), r.lim.Algorithm, freeNote(r))
		}
	}
	_ = tw.Flush()
	// Highlight after the columns are laid out, so the escape sequences
	// take no width.
	for _, line := range strings.SplitAfter(table.String(), "\n") {
		if a.tty && strings.Contains(line, heldMark) {
			line = reverse + strings.TrimSuffix(line, "\n") + plain + "\n"
		}
		_, _ = io.WriteString(w, line)
	}
}

// heldMark starts the hold cell of a watch line.
const heldMark = "!! held for "

// freeNote says when a limit frees its next unit, and when all of them.
func freeNote(r row) string {
	s := "free now"
	if r.free > 0 {
		s = "free in " + dur(r.free)
	}
	if r.reset > 0 {
		s += ", all in " + dur(r.reset)
	}
	return s
}
