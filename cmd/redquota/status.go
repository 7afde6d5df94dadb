package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
)

// row is one line of status: a limit of a quota, or a quota's hold.
type row struct {
	quota, limit string
	lim          limiter.Limit
	used, max    int
	free         time.Duration // until one unit is granted: 0 now
	reset        time.Duration // until back to full
	hold         time.Duration // > 0 on a hold row
	reason       string
}

// use is how close the row is to its limit, 0 to 1; a hold is full.
func (r row) use() float64 {
	if r.hold > 0 {
		return math.Inf(1)
	}
	if r.max == 0 {
		return 0
	}
	return float64(r.used) / float64(r.max)
}

// view is what status and watch show of one quota, rows fullest first.
type view struct {
	state limiter.QuotaState
	rows  []row
}

func (v view) use() float64 {
	if len(v.rows) == 0 {
		return 0
	}
	return v.rows[0].use()
}

// views reads the quotas and orders them by how close each is to its limit:
// held quotas first, then by their fullest limit, then by name.
func (a *app) views(ctx context.Context, names []string) ([]view, error) {
	states, err := a.lim.Inspect(ctx, names...)
	if err != nil {
		return nil, err
	}
	vs := make([]view, 0, len(states))
	for _, st := range states {
		v := view{state: st}
		name := display(st)
		if st.Hold > 0 {
			v.rows = append(v.rows, row{quota: name, hold: st.Hold, reason: st.HoldReason})
		}
		var limits []row
		for _, lr := range st.Limits {
			m := bound.Most(lr.Limit.Rate, lr.Limit.Burst, lr.Limit.Algorithm == limiter.GCRA)
			limits = append(limits, row{quota: name, limit: lr.Name, lim: lr.Limit,
				used: m - lr.Remaining, max: m, free: lr.RetryAfter, reset: lr.ResetAfter})
		}
		sort.SliceStable(limits, func(i, j int) bool { return limits[i].use() > limits[j].use() })
		v.rows = append(v.rows, limits...)
		vs = append(vs, v)
	}
	sort.SliceStable(vs, func(i, j int) bool { return vs[i].use() > vs[j].use() })
	return vs, nil
}

func (a *app) status(ctx context.Context, names []string) int {
	vs, err := a.views(ctx, names)
	if err != nil {
		return a.fail("status", err)
	}
	if a.o.json {
		return a.printJSON(vs)
	}
	if len(vs) == 0 {
		fmt.Fprintf(a.stdout, "no quotas under prefix %q (a quota appears once a process has decided on it)\n", a.o.prefix)
		return exitOK
	}
	printTable(a.stdout, vs)
	return exitOK
}

// printTable writes the status table.
func printTable(w io.Writer, vs []view) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// FREE IN is when one more unit is granted (after the units booked
	// ahead: past the window's end when the next window is booked full too),
	// ALL FREE IN when the limit is back to full. ALL FREE IN is last and not
	// tab-terminated, so its width (which moves with the clock for aligned
	// windows) never shifts another column.
	fmt.Fprintln(tw, "QUOTA\tLIMIT\tALGORITHM\tRATE\tUSED\tUSE\tFREE IN\tALL FREE IN")
	for _, v := range vs {
		if len(v.rows) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t- (nothing in Redis)\n", display(v.state))
		}
		for _, r := range v.rows {
			if r.hold > 0 {
				fmt.Fprintf(tw, "%s\tHOLD\t-\t-\t-\t-\t%s\t%s  %s\n", r.quota, dur(r.hold), dur(r.hold), holdNote(r.reason))
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", r.quota, limitName(r.limit), r.lim.Algorithm,
				rate(r.lim), r.used, r.max, pct(r.use()), freeIn(r.free), dur(r.reset))
		}
	}
	_ = tw.Flush()
}

// display names a quota instance: "name", or "name[key]" for an instance of
// a template (Quota.For).
func display(st limiter.QuotaState) string {
	if st.Key != "" {
		return st.Quota.Name + "[" + st.Key + "]"
	}
	return st.Quota.Name
}

func holdNote(reason string) string {
	if reason == "" {
		return "reason: none recorded (a 429/418 seen by a process, or set without one)"
	}
	return "reason: " + reason
}

func limitName(n string) string {
	if n == "" {
		return "-" // a single key's limit
	}
	return n
}

// freeIn shows when one more unit is granted: "now", or the time left.
func freeIn(d time.Duration) string {
	if d <= 0 {
		return "now"
	}
	return dur(d)
}

func pct(u float64) string { return strconv.Itoa(int(math.Floor(u*100))) + "%" }

// rate is "1200/1m", "10/1h burst 5".
func rate(l limiter.Limit) string {
	s := fmt.Sprintf("%d/%s", l.Rate, period(l.Period))
	if l.Algorithm == limiter.GCRA && l.Burst != 0 && l.Burst != l.Rate {
		s += fmt.Sprintf(" burst %d", l.Burst)
	}
	return s
}

func period(p time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
		if p%u.d == 0 {
			return strconv.FormatInt(int64(p/u.d), 10) + u.name
		}
	}
	return p.String()
}

// dur shows a time left, rounded up to a unit that suits its size, so that
// the figure never promises less than is left and does not flicker: tenths
// of a second under 10 s, seconds under 10 min, minutes under a day, hours
// beyond.
func dur(d time.Duration) string {
	ceil := func(u time.Duration) time.Duration { return (d + u - 1) / u * u }
	switch {
	case d <= 0:
		return "-"
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", ceil(100*time.Millisecond).Seconds())
	case d < 10*time.Minute:
		d = ceil(time.Second)
		if d < time.Minute {
			return fmt.Sprintf("%ds", int(d/time.Second))
		}
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		d = ceil(time.Minute)
		if d < time.Hour {
			return fmt.Sprintf("%dm", int(d/time.Minute))
		}
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	d = ceil(time.Hour)
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// jsonQuota is a quota in status --json: the stable shape for scripts.
type jsonQuota struct {
	Name       string      `json:"name"`
	Key        string      `json:"key,omitempty"`
	Group      string      `json:"group,omitempty"`
	HoldMS     int64       `json:"hold_ms"`
	HoldReason string      `json:"hold_reason"`
	Limits     []jsonLimit `json:"limits"`
}

type jsonLimit struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	Rate      int    `json:"rate"`
	PeriodMS  int64  `json:"period_ms"`
	Burst     int    `json:"burst"`
	Max       int    `json:"max"`
	Used      int    `json:"used"`
	Remaining int    `json:"remaining"`
	FreeMS    int64  `json:"free_ms"` // until one more unit is granted (0: now)
	ResetMS   int64  `json:"reset_ms"`
}

func (a *app) printJSON(vs []view) int {
	out := struct {
		Prefix string      `json:"prefix"`
		Quotas []jsonQuota `json:"quotas"`
	}{Prefix: a.o.prefix, Quotas: []jsonQuota{}}
	for _, v := range vs {
		q := jsonQuota{Name: v.state.Quota.Name, Key: v.state.Key, Group: v.state.Quota.Group, HoldMS: v.state.Hold.Milliseconds(), HoldReason: v.state.HoldReason, Limits: []jsonLimit{}}
		for _, r := range v.rows {
			if r.hold > 0 {
				continue
			}
			q.Limits = append(q.Limits, jsonLimit{Name: r.limit, Algorithm: r.lim.Algorithm.String(), Rate: r.lim.Rate,
				PeriodMS: r.lim.Period.Milliseconds(), Burst: r.lim.Burst, Max: r.max, Used: r.used,
				Remaining: r.max - r.used, FreeMS: r.free.Milliseconds(), ResetMS: r.reset.Milliseconds()})
		}
		out.Quotas = append(out.Quotas, q)
	}
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return a.fail("status", err)
	}
	return exitOK
}

// bar is a fixed-width bar of use u (0 to 1), in plain ASCII.
func bar(u float64, width int) string {
	n := int(math.Round(min(max(u, 0), 1) * float64(width)))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
