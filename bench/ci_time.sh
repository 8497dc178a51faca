#!/usr/bin/env bash
# CI's wall time, measured the way CI runs: a fresh clone of this repository's HEAD with ../shared
# beside it, `.ci/run` (install from nothing, then `make test`). Issue 21's goal: ci_wall_s <= 1500
# on 2 cores. Prints the pytest summary, then `ci_wall_s = <seconds>` last.
#   bash bench/ci_time.sh [WORKDIR]      (default: a new temporary folder, removed at the end)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="$(cd "$REPO/.." && pwd)/shared"
[ -d "$SHARED" ] || { echo "error: ../shared not found beside the repo (looked at $SHARED)" >&2; exit 2; }
WORK="${1:-$(mktemp -d)}"
[ -n "${1:-}" ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"
[ -e "$WORK/shared" ] || ln -s "$SHARED" "$WORK/shared"
rm -rf "$WORK/main"
git clone -q "$REPO" "$WORK/main"
cd "$WORK/main"
start=$(date +%s)
rc=0
bash .ci/run > "$WORK/ci.log" 2>&1 || rc=$?
end=$(date +%s)
grep -E "passed|failed|error" "$WORK/ci.log" | tail -3 || true
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ci_exit_code = $rc"
echo "ci_wall_s = $((end - start))"
exit "$rc"
