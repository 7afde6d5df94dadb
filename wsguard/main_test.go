package wsguard_test

import (
	"testing"

	"github.com/redquota/redquota/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }
