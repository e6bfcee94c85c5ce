#!/usr/bin/env bash
# Repairs every broken model of the shared dataset with admesh, trimesh and
# strata, and judges every result the same way: trimesh 5.2 loads the
# written STL (its default 8-decimal vertex merge) and reports watertight,
# winding-consistent and is_volume, plus face count and volume. "Fixed"
# means all three are true. The table feeds docs/repair.md.
#
#   benches/repair_compare.sh [WORKDIR]
#
# Needs: admesh (Debian: apt-get install admesh) and python3 (the script
# makes a virtualenv with trimesh 5.2 and its optional dependencies).
# Broken = every STL row of the MANIFEST that trimesh does not call a valid
# volume, except the empty file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
work="${1:-/tmp/strata-repair-compare}"
datasets="${STRATA_DATASETS:-$root/../shared/datasets}"
mkdir -p "$work/out"
command -v admesh >/dev/null || { echo "repair_compare.sh: admesh is missing (apt-get install admesh)" >&2; exit 1; }

venv="$work/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "trimesh==5.2.0" numpy scipy networkx
fi
py="$venv/bin/python"
(cd "$root" && cargo build --release --quiet)
strata="$root/target/release/strata"

files=$("$py" - "$datasets/MANIFEST.tsv" <<'PY'
import csv, sys
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    if r["format"] in ("ascii", "binary", "binary-solidheader", "binary-sizemismatch") \
            and r["tm_is_volume"] == "False" and r["triangles"] not in ("", "0"):
        print(r["file"])
PY
)

for f in $files; do
  in="$datasets/$f"
  admesh -e -n -u -f -d -v "$in" -b "$work/out/admesh__$f" >/dev/null 2>&1 || true
  "$py" - "$in" "$work/out/trimesh__$f" <<'PY' || true
import sys, trimesh
m = trimesh.load(sys.argv[1], force="mesh")
trimesh.repair.fix_normals(m, multibody=True)
trimesh.repair.fill_holes(m)
trimesh.repair.fix_normals(m, multibody=True)
m.export(sys.argv[2])
PY
  "$strata" repair "$in" "$work/out/strata__$f" >/dev/null 2>&1 || true
  "$strata" repair --remove-unconnected "$in" "$work/out/strata-u__$f" >/dev/null 2>&1 || true
done

"$py" - "$work/out" $files <<'PY'
import os, sys, trimesh
out, files = sys.argv[1], sys.argv[2:]
tools = [("admesh", "admesh -e -n -u -f -d -v"), ("trimesh", "trimesh fix_normals+fill_holes"),
         ("strata", "strata repair"), ("strata-u", "strata repair --remove-unconnected")]
fixed = {t: 0 for t, _ in tools}
print("| file | " + " | ".join(label for _, label in tools) + " |")
print("|---|" + "---|" * len(tools))
for f in files:
    cells = []
    for t, _ in tools:
        p = os.path.join(out, f"{t}__{f}")
        if not os.path.exists(p):
            cells.append("no output")
            continue
        try:
            m = trimesh.load(p, force="mesh")
        except Exception as e:
            cells.append(f"unreadable ({type(e).__name__})")
            continue
        ok = bool(m.is_watertight and m.is_winding_consistent and m.is_volume)
        fixed[t] += ok
        flags = "".join(c if b else "-" for c, b in zip("WCV", (m.is_watertight, m.is_winding_consistent, m.is_volume)))
        cells.append(f"{'**fixed**' if ok else 'not fixed'} {flags} {len(m.faces)}f vol {m.volume:.6g}")
    print(f"| {f} | " + " | ".join(cells) + " |")
print()
print(f"fixed out of {len(files)}: " + ", ".join(f"{label}: {fixed[t]}" for t, label in tools))
PY
