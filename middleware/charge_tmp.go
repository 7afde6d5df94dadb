package middleware

import "github.com/redquota/redquota/limiter"

// Charge is a stand-in for limiter.Charge until issue-17l lands (TEMPORARY).
type Charge struct {
	Quota limiter.Quota
	Cost  limiter.Cost
}
