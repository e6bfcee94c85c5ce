#!/usr/bin/env bash
# Times `strata inspect` side by side with the STL tools people use today, on
# the same generated files in one run, and prints ratios against each tool
# and against the physical floor (a memory-mapped pass summing every float).
#
#   benches/compare.sh [WORKDIR]
#
# Needs: hyperfine and admesh (Debian: apt-get install hyperfine admesh),
# python3 (the script makes a virtualenv with trimesh and numpy-stl), and
# ../shared/datasets (or STRATA_DATASETS) for the source model. Inputs are
# generated from a real model by the dataset's make_large.py (midpoint
# subdivision) and never committed:
#   binary, 5,360,000 facets (268 MB): trimesh_counter_unitsmm.STL x 4^3
#   ASCII,  1,340,000 facets (~330 MB): the same model x 4^2, written as text
# Set RUNS to change the number of timed runs (default 3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
work="${1:-/tmp/strata-compare}"
runs="${RUNS:-3}"
datasets="${STRATA_DATASETS:-$root/../shared/datasets}"
mkdir -p "$work"

for tool in hyperfine admesh python3; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool is missing (apt-get install hyperfine admesh)" >&2; exit 1; }
done

venv="$work/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "trimesh==5.2.0" numpy scipy numpy-stl
fi
py="$venv/bin/python"

bin5m="$work/counter_x64_5m.stl"
asc1m="$work/counter_x16_1m_ascii.stl"
if [ ! -f "$bin5m" ]; then
  "$py" "$datasets/tools/make_large.py" "$datasets/trimesh_counter_unitsmm.STL" "$bin5m" 3
fi
if [ ! -f "$asc1m" ]; then
  "$py" "$datasets/tools/make_large.py" "$datasets/trimesh_counter_unitsmm.STL" "$work/x16.stl" 2
  "$py" - "$work/x16.stl" "$asc1m" <<'EOF'
import sys, numpy as np
rec = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
data = open(sys.argv[1], "rb").read()
n = int.from_bytes(data[80:84], "little")
r = np.frombuffer(data[84:], dtype=rec, count=n)
with open(sys.argv[2], "w") as f:
    f.write("solid counter\n")
    for nrm, v in zip(r["n"], r["v"]):
        f.write("  facet normal %e %e %e\n    outer loop\n" % tuple(nrm))
        for p in v:
            f.write("      vertex %e %e %e\n" % tuple(p))
        f.write("    endloop\n  endfacet\n")
    f.write("endsolid counter\n")
EOF
  rm -f "$work/x16.stl"
fi

(cd "$root" && cargo build --release --quiet)
(cd "$here/anchors" && cargo build --release --quiet)
strata="$root/target/release/strata"
anchors="$here/anchors/target/release/strata-anchors"

time_all() { # label file commands...
  local label="$1" file="$2"; shift 2
  hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/$label.json" "$@" >/dev/null
}

echo "== binary: $(basename "$bin5m") ($(stat -c %s "$bin5m") bytes)"
time_all binary "$bin5m" \
  -n "floor (mmap float sum)" "$anchors floor $bin5m" \
  -n "strata zero-copy view" "$anchors strata-view $bin5m" \
  -n "strata parse + weld" "$anchors strata-weld $bin5m" \
  -n "strata inspect" "$strata inspect --json $bin5m" \
  -n "stl_io triangle iterator" "$anchors stl_io-iter $bin5m" \
  -n "mesh-loader" "$anchors mesh-loader $bin5m" \
  -n "nom_stl" "$anchors nom_stl $bin5m" \
  -n "stl_io indexed mesh" "$anchors stl_io-indexed $bin5m" \
  -n "admesh default check" "admesh $bin5m" \
  -n "numpy-stl load" "$py -c 'import sys; from stl import mesh; mesh.Mesh.from_file(sys.argv[1])' $bin5m" \
  -n "trimesh load" "$py -c 'import sys, trimesh; trimesh.load(sys.argv[1])' $bin5m"

echo "== ascii: $(basename "$asc1m") ($(stat -c %s "$asc1m") bytes)"
time_all ascii "$asc1m" \
  -n "strata inspect" "$strata inspect --json $asc1m" \
  -n "strata parse" "$anchors strata-parse $asc1m" \
  -n "strata parse + weld" "$anchors strata-weld $asc1m" \
  -n "mesh-loader" "$anchors mesh-loader $asc1m" \
  -n "nom_stl" "$anchors nom_stl $asc1m" \
  -n "stl_io triangle iterator" "$anchors stl_io-iter $asc1m" \
  -n "admesh default check" "admesh $asc1m"

rss() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }
echo "== peak RSS (KiB, /usr/bin/time): strata inspect binary $(rss "$strata" inspect --json "$bin5m"), mapped file pages included"

"$py" - "$work" "$bin5m" "$asc1m" <<'EOF'
import json, os, sys
work, bin5m, asc1m = sys.argv[1:4]
for label, path in (("binary", bin5m), ("ascii", asc1m)):
    res = json.load(open(os.path.join(work, label + ".json")))["results"]
    mb = os.path.getsize(path) / 1e6
    by = {r["command"]: r for r in res}
    s = by["strata inspect"]
    floor = by.get("floor (mmap float sum)")
    print(f"\n{label}: {mb:.0f} MB, {len(s['times'])} runs each (wall mean; CPU = user + sys)")
    print(f"{'tool':32} {'wall s':>8} {'CPU s':>8} {'MB/s':>8} {'x floor':>8} {'strata faster by':>17}")
    for r in res:
        cpu = r["user"] + r["system"]
        xf = f"{r['mean'] / floor['mean']:.1f}" if floor else "-"
        ratio = "" if r is s else f"{r['mean'] / s['mean']:.1f}x"
        print(f"{r['command']:32} {r['mean']:8.3f} {cpu:8.3f} {mb / r['mean']:8.0f} {xf:>8} {ratio:>17}")
EOF
