package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/redquota/redquota/limiter"
)

// instance finds the quota instance an operator names: name, and the key
// of --key for an instance of a template. Its group comes from the
// definitions the processes registered. found is false when Redis holds
// nothing of it; others are then the keys of the quota's instances Redis
// does hold (its processes use it as a template, with other keys).
func (a *app) instance(ctx context.Context, name string) (st limiter.QuotaState, found bool, others []string, err error) {
	states, err := a.lim.Inspect(ctx, name)
	if err != nil {
		return st, false, nil, err
	}
	q := limiter.Quota{Name: name}
	for _, s := range states {
		if s.Quota.Name != name || len(s.Quota.Limits) == 0 && s.Hold == 0 {
			continue
		}
		if s.Key == a.o.key {
			return s, true, nil, nil
		}
		q.Group = s.Quota.Group
		others = append(others, s.Key)
	}
	if a.o.key != "" {
		q = q.For(a.o.key)
	}
	return limiter.QuotaState{Quota: q, Key: a.o.key}, false, others, nil
}

// unknown tells the operator, after lead, that no process uses the instance
// a command names, and which instances of that name they do use.
func (a *app) unknown(lead string, others []string) {
	fmt.Fprint(a.stderr, lead)
	if len(others) > 0 {
		if len(others) > 5 {
			others = append(others[:5:5], "…")
		}
		fmt.Fprintf(a.stderr, "; its instances in use are --key %s", strings.Join(others, ", "))
	}
	fmt.Fprintln(a.stderr, " (check the name, --key and --prefix)")
}

// hold stops every grant of the named instance for d, with the reason and
// who set it.
func (a *app) hold(ctx context.Context, name string, d time.Duration) int {
	st, found, others, err := a.instance(ctx, name)
	if err != nil {
		return a.fail("hold", err)
	}
	name = display(st)
	if !found {
		// Holding a quota before any process uses it is allowed; a typo is
		// likelier, so say so before asking.
		a.unknown(fmt.Sprintf("redquota hold: no process has decided on %s under prefix %q lately", name, a.o.prefix), others)
	}
	if !a.confirm(fmt.Sprintf("Hold %s for %s? Every process stops taking units from it until then.", name, d)) {
		return exitFailed
	}
	reason := a.o.reason
	if by := who(a.lookup); reason == "" {
		reason = "set with redquota by " + by
	} else {
		reason += " (" + by + ")"
	}
	left, err := a.lim.Hold(ctx, st.Quota, d, reason)
	if err != nil {
		return a.fail("hold", err)
	}
	fmt.Fprintf(a.stdout, "%s held for %s: %s\n", name, dur(left), reason)
	return exitOK
}

// release ends the hold on the named instance.
func (a *app) release(ctx context.Context, name string) int {
	st, _, _, err := a.instance(ctx, name)
	if err != nil {
		return a.fail("release", err)
	}
	name = display(st)
	if st.Hold <= 0 {
		fmt.Fprintf(a.stdout, "%s is not held\n", name)
		return exitOK
	}
	if !a.confirm(fmt.Sprintf("Release the hold on %s (%s left, %s)? Every process may take units from it at once.",
		name, dur(st.Hold), holdNote(st.HoldReason))) {
		return exitFailed
	}
	if _, err := a.lim.Hold(ctx, st.Quota, 0, ""); err != nil {
		return a.fail("release", err)
	}
	fmt.Fprintf(a.stdout, "%s released\n", name)
	return exitOK
}

// reset forgets the named instance's counts and hold, with the limiter's own
// Reset (of the quota, or of a single key), using the definition its processes
// registered.
func (a *app) reset(ctx context.Context, name string) int {
	st, _, others, err := a.instance(ctx, name)
	if err != nil {
		return a.fail("reset", err)
	}
	q := st.Quota
	name = display(st)
	if len(q.Limits) == 0 {
		a.unknown(fmt.Sprintf("redquota reset: no definition of %q under prefix %q: no process has decided on it lately", name, a.o.prefix), others)
		return exitFailed
	}
	if !a.confirm(fmt.Sprintf("Reset %s? Its counts and hold are forgotten: processes may take a full limit again at once.", name)) {
		return exitFailed
	}
	if len(q.Limits) == 1 && q.Limits[0].Name == "" && st.Key == "" && q.Group == "" {
		err = a.lim.Reset(ctx, limiter.Quota{Name: name})
	} else {
		err = a.lim.Reset(ctx, q)
	}
	if err != nil {
		return a.fail("reset", err)
	}
	fmt.Fprintf(a.stdout, "%s reset\n", name)
	return exitOK
}

// who is the operator, user@host, for the record of a hold.
func who(lookup func(string) (string, bool)) string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if v, ok := lookup("REDQUOTA_OPERATOR"); ok && v != "" {
		name = v
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return name
	}
	if v, ok := lookup("REDQUOTA_HOST"); ok && v != "" {
		host = v
	}
	return name + "@" + host
}
