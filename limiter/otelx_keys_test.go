package limiter

import "github.com/redquota/redquota/internal/otelx"

// The attribute keys the telemetry tests read that the limiter shares with
// other packages (internal/otelx), under the names the tests use.
const (
	attrResult     = otelx.Result
	attrQuota      = otelx.Quota
	attrCost       = otelx.Cost
	attrAllowed    = otelx.Allowed
	attrRemaining  = otelx.Remaining
	attrRetryAfter = otelx.RetryAfter
	attrDeniedBy   = otelx.DeniedBy
	attrWaited     = otelx.Waited
	attrDegraded   = otelx.Degraded
)
