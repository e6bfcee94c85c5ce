#!/usr/bin/env bash
# The instruction-count gate on the hot path (benches/instructions.rs):
# runs the benches under callgrind; a bench more than 3% over its
# committed baseline (benches/instructions.baseline.json) fails the run and
# is named. `--bless` writes the baseline from this run instead (commit it
# with the change that moved the counts).
#
# Needs valgrind and gungraun-runner 0.20.0 on PATH:
#   apt-get install valgrind; cargo install gungraun-runner --version 0.20.0 --locked
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=benches/instructions.baseline.json
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
cargo bench --locked -p strata-core --bench instructions 2>&1 | tee "$out" || status=$?
if [[ "${1:-}" == "--bless" ]]; then
    python3 - "$out" "$baseline" <<'PY'
import json, re, sys
counts, name = {}, None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r"^instructions::hot_path::(\w+) ", line)
    if m:
        name = m.group(1)
        continue
    m = re.match(r"^\s+Instructions:\s+(\d+)\|", line)
    if m and name:
        counts[{"validate_mesh": "validate"}.get(name, name)] = int(m.group(1))
        name = None
if len(counts) < 6:
    sys.exit(f"only {len(counts)} benches reported; baseline not written")
with open(sys.argv[2], "w") as f:
    json.dump(dict(sorted(counts.items())), f, indent=2)
    f.write("\n")
print(f"wrote {sys.argv[2]}: {counts}")
PY
    exit 0
fi
if [[ $status -ne 0 ]]; then
    echo "instruction counts: a bench is more than 3% over benches/instructions.baseline.json (see above);" >&2
    echo "if the change is deliberate, run benches/instructions.sh --bless and commit the baseline" >&2
fi
exit $status
