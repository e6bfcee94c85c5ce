#!/usr/bin/env bash
# Side-by-side slicing of one model with the tools people use, same model,
# same layer height, one run each after a warm-up (the OS file cache warm
# for every tool). Reports each tool's slicing phase where it can be told
# apart, and the whole command.
#
#   benches/slice_compare.sh [MODEL.stl] [LAYER_HEIGHT]
#
# Default: the generated 1M-triangle torus (6 mm tall) at 0.04 mm, i.e.
# 150 layers, the case the issue's reference figures were measured on.
# Tools that are missing are skipped with a note:
#   prusa-slicer (Debian prusa-slicer): SLA export, --loglevel 4; its slicing
#     phase is from "Slicing model" to the next step's timestamp.
#   CuraEngine (Debian cura-engine + cura for the printer definitions):
#     its log's "Slicing model" to "Layer generation" lines.
#   trimesh (PyPI trimesh 5.2, in a virtualenv made here): section_multiplane
#     at our exact plane heights, timed in-process.
#   strata: `strata slice --timings` (load, slice, encode, write), and
#     criterion's figure from `cargo bench -p strata-core --bench core -- slice-1M`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
work="${WORK:-/tmp/strata-slice-compare}"
mkdir -p "$work"
(cd "$root" && cargo build --release --quiet)
strata="$root/target/release/strata"
model="${1:-$work/torus1m.stl}"
h="${2:-0.04}"
if [ ! -f "$model" ]; then
  "$strata" generate torus "$model" --triangles 1000000
fi
echo "model: $model, layer height $h"

echo "== strata"
"$strata" slice "$model" "$work/strata.out" --layer-height "$h" >/dev/null
/usr/bin/time -f "strata whole command: %e s, peak RSS %M KiB" \
  "$strata" slice "$model" "$work/strata.out" --layer-height "$h" --timings >/dev/null

if command -v prusa-slicer >/dev/null; then
  echo "== PrusaSlicer $(prusa-slicer --help 2>/dev/null | head -1 | awk '{print $2}')"
  prusa-slicer --export-sla --printer-technology SLA --layer-height "$h" --output "$work/p.sl1" "$model" >/dev/null 2>&1 || true
  start=$(date +%s.%N)
  prusa-slicer --export-sla --printer-technology SLA --layer-height "$h" --loglevel 4 \
    --output "$work/p.sl1" "$model" >"$work/prusa.log" 2>&1 || true
  end=$(date +%s.%N)
  python3 - "$work/prusa.log" <<'PY'
import re, sys, datetime
ts = lambda l: datetime.datetime.strptime(re.match(r"\[(.*?)\]", l).group(1), "%Y-%m-%d %H:%M:%S.%f")
lines = [l for l in open(sys.argv[1]) if l.startswith("[")]
for i, l in enumerate(lines):
    if "Slicing model" in l:
        nxt = next(m for m in lines[i + 1:] if "%" in m and "Slicing model" not in m and "slice_mesh" not in m)
        print(f"PrusaSlicer slicing phase (slice_mesh to polygons): {(ts(nxt) - ts(l)).total_seconds():.3f} s")
        break
PY
  echo "PrusaSlicer whole command: $(python3 -c "print(f'{$end - $start:.2f}')") s"
else
  echo "== PrusaSlicer: not installed (apt-get install prusa-slicer)"
fi

if command -v CuraEngine >/dev/null && [ -d /usr/share/cura/resources/definitions ]; then
  echo "== CuraEngine"
  defs=/usr/share/cura/resources/definitions:/usr/share/cura/resources/extruders
  start=$(date +%s.%N)
  CURA_ENGINE_SEARCH_PATH=$defs CuraEngine slice -v -j fdmprinter.def.json -s layer_height="$h" \
    -s layer_height_0="$h" -s adhesion_type=none -l "$model" -o "$work/c.gcode" >"$work/cura.log" 2>&1 || true
  end=$(date +%s.%N)
  grep -iE "slic(ed|ing) model|layer generation|Total time" "$work/cura.log" | head -5 || true
  echo "CuraEngine whole command: $(python3 -c "print(f'{$end - $start:.2f}')") s"
else
  echo "== CuraEngine: not installed (apt-get install cura-engine cura)"
fi

venv="$work/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "trimesh==5.2.0" numpy scipy networkx shapely rtree || true
fi
if [ -x "$venv/bin/python" ]; then
  echo "== trimesh"
  "$venv/bin/python" - "$model" "$h" <<'PY'
import sys, time, trimesh, numpy as np
m = trimesh.load(sys.argv[1], force="mesh"); h = float(sys.argv[2])
lo, hi = m.bounds[0][2], m.bounds[1][2]
z = [lo + h / 2 + i * h for i in range(int(np.ceil((hi - lo) / h)))]
t = time.perf_counter()
s = m.section_multiplane(plane_origin=[0, 0, lo], plane_normal=[0, 0, 1], heights=[v - lo for v in z])
print(f"trimesh section_multiplane: {time.perf_counter() - t:.2f} s for {len(z)} layers")
PY
fi
