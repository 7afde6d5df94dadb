package middleware

// ParseRetryAfter is parseRetryAfter, for the external tests.
var ParseRetryAfter = parseRetryAfter
