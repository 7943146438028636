#!/usr/bin/env bash
# Runs every fuzz target in the repository for FUZZTIME each (default 5s):
# `make test` runs it so that each target gets a bounded run on every
# change; run it with FUZZTIME=60s (or `go test -fuzz` on one target) to
# search longer. A failure leaves the input under the package's
# testdata/fuzz/<Target>/ and fails the run; commit it with the fix, as a
# seed.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}

targets=0
while IFS= read -r file; do
	dir=$(dirname "$file")
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		echo "fuzz: $dir $target for $FUZZTIME"
		"$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "./$dir" >/tmp/sluice-fuzz.$$ 2>&1 || {
			cat /tmp/sluice-fuzz.$$
			rm -f /tmp/sluice-fuzz.$$
			echo "fuzz: $dir $target FAILED"
			exit 1
		}
		grep -o 'elapsed: [0-9a-z]*, execs: [0-9]*' /tmp/sluice-fuzz.$$ | tail -n 1 | sed 's/^/  /' || true
		targets=$((targets + 1))
	done
done < <(find . -path ./.tools -prune -o -path ./.demo -prune -o -name '*_test.go' -print | sed 's|^\./||' | sort)
rm -f /tmp/sluice-fuzz.$$
echo "fuzz: $targets targets, $FUZZTIME each, nothing found"
