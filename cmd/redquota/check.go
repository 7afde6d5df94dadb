package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/redquota/redquota/limiter"
)

// check runs the limiter's server checks; exit 1 if one failed.
func (a *app) check(ctx context.Context) int {
	cs, err := limiter.CheckServer(ctx, a.client, a.o.prefix)
	if err != nil {
		return a.fail("check", err)
	}
	failed := false
	for _, c := range cs {
		failed = failed || c.Level == "fail"
	}
	if a.o.json {
		type jc struct {
			Name   string `json:"name"`
			Level  string `json:"level"`
			Detail string `json:"detail"`
			Advice string `json:"advice,omitempty"`
		}
		out := make([]jc, len(cs))
		for i, c := range cs {
			out[i] = jc(c)
		}
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else {
		for _, c := range cs {
			fmt.Fprintf(a.stdout, "%-4s  %-11s  %s\n", strings.ToUpper(c.Level), c.Name, c.Detail)
			if c.Advice != "" {
				fmt.Fprintf(a.stdout, "      %-11s  -> %s\n", "", c.Advice)
			}
		}
	}
	if failed {
		return exitFailed
	}
	return exitOK
}
