#!/usr/bin/env bash
# The catalog benchmark: builds a synthetic catalog at bench time (never
# committed): the dataset models plus generated tori of various sizes,
# at least 1,000 files and about 1 GB, then ingests it with 1 and 2 jobs
# into fresh stores and reports models/s, MB/s, peak RSS and the speed-up.
#
#   benches/ingest_bench.sh [FILES] [WORKDIR]
#   REPEAT=5 benches/ingest_bench.sh                     # more rounds
#   SWEEP="250 500 1000 2000" benches/ingest_bench.sh   # RSS as the catalog grows
#
# FILES defaults to 1000 (sizes cycle 2k..60k triangles, ~1 GB in all).
# Peak RSS comes from /usr/bin/time (GNU time). Each run prints its stage
# times (`--timings`): wall time against the sum of the core's stages.
#
# Method. Runs alternate 1, 2, 1, 2... (REPEAT rounds, default 3) after an
# unmeasured warm-up run, and the table gives medians: on the virtual
# machines we measure on, the first touch of memory the guest has not used
# lately costs about 2 s per GB (seen: 1.1 GB written into fresh page cache
# in 2.6 s, the same again in 0.6 s), which made single runs differ by 30%.
# Runs never delete a store just before another run: on ext4 without a
# journal (this machine's disk), creating files right after thousands were
# deleted scans past the deleted inodes (`recently_deleted` in the kernel's
# profile), which made each run slower than the last (sys time 0.6 s, then
# 1.4, 2.0, 2.4 s). Every run gets a store of its own, all removed at the
# end (about 1.2 GB each, 12 GB for REPEAT=3), and the stores of an earlier
# invocation are removed, synced and given 65 s before the first run (ext4 treats an
# inode freed in the last 60 s as recently deleted).
# Two references sit beside the pipeline's figures:
#   - the core alone (`pipeline/examples/core_only.rs`): the same models
#     hashed and processed from memory, no store; its 1 -> 2 thread
#     speed-up is the ceiling of the pipeline's;
#   - `--jobs 1` pinned to one core (taskset): with one worker unpinned,
#     the reader, the writer and the kernel's writeback run on the second
#     core for free, which two workers cannot have; pinned, the ratio is
#     the speed-up from one core to two.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
files="${1:-1000}"
work="${2:-/tmp/strata-ingest-bench}"
repeat="${REPEAT:-3}"
(cd "$root" && cargo build --release --quiet && cargo build --release --quiet -p strata-pipeline --example core_only)
if [ -n "${SWEEP:-}" ]; then
  for n in $SWEEP; do SWEEP= REPEAT=1 CORE_ONLY=0 PINNED=0 "$0" "$n" "$work-$n" | grep -E "^catalog|^jobs 2 "; done
  exit 0
fi
strata="$root/target/release/strata"
cat="$work/catalog"
"$here/make_catalog.sh" "$files" "$work" "$strata"
echo "catalog: $(find "$cat" -type f \( -iname '*.stl' -o -iname '*.obj' -o -iname '*.3mf' \) | wc -l) files, $(du -sm "$cat" | cut -f1) MB"
find "$cat" -type f -exec cat {} + > /dev/null   # the catalog in the page cache

if compgen -G "$work/data-*" > /dev/null; then
  echo "removing the stores of an earlier run (then sync and 65 s for the file system)" >&2
  rm -rf "$work"/data-*; sync; sleep 65
fi
trap 'rm -rf "$work"/data-*' EXIT

# One ingest into a new store: KIND is 1, 2 or pinned, ROUND names the
# store; prints "KIND wall_s rss_kib core_s".
run() {
  local kind="$1" round="$2" jobs="$1" pin=()
  if [ "$kind" = pinned ]; then jobs=1; pin=(taskset -c 0); fi
  local out
  out="$(/usr/bin/time -f "time %e %M" "${pin[@]}" "$strata" ingest "$cat" --data "$work/data-$kind-$round" \
    --jobs "$jobs" --report "$work/report-$kind.json" --timings 2>&1 | grep -v '^failed:')"
  echo "$out" | grep -E 'models in|core stages' | sed "s/^/  [$kind] /" >&2
  local wall rss core
  read -r wall rss < <(echo "$out" | awk '/^time /{print $2, $3}')
  core="$(echo "$out" | awk '/^core stages/{print $3}')"
  echo "$kind $wall $rss $core"
}

median() { sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }

results="$work/results.txt"
: > "$results"
echo "warm-up run (not measured)" >&2
run 2 warmup > /dev/null
for r in $(seq 1 "$repeat"); do
  echo "round $r of $repeat" >&2
  for kind in 1 2; do run "$kind" "$r" >> "$results"; done
  if [ "${PINNED:-1}" = 1 ]; then run pinned "$r" >> "$results"; fi
done
field() { awk -v k="$1" -v f="$2" '$1==k{print $f}' "$results" | median; }
mb="$(du -sm "$cat" | cut -f1)"
n="$(find "$cat" -type f \( -iname '*.stl' -o -iname '*.obj' -o -iname '*.3mf' \) | wc -l)"
w1="$(field 1 2)"; w2="$(field 2 2)"; wp="$(field pinned 2)"
c1="$(field 1 4)"
for kind in 1 2 pinned; do
  w="$(field "$kind" 2)"; [ -z "$w" ] && continue
  awk -v k="$kind" -v w="$w" -v rss="$(field "$kind" 3)" -v n="$n" -v mb="$mb" \
    'BEGIN{printf "jobs %s : median wall %.2f s, %.1f models/s, %.1f MB/s, peak RSS %.0f MiB\n", k, w, n/w, mb/w, rss/1024}'
done
awk -v w1="$w1" -v w2="$w2" -v c1="$c1" \
  'BEGIN{printf "speed-up 1 -> 2 jobs: %.2fx (goal 1.8x); jobs 1 wall / core stage sum: %.2fx (goal 1.3x)\n", w1/w2, w1/c1}'
[ -n "$wp" ] && awk -v wp="$wp" -v w2="$w2" 'BEGIN{printf "speed-up 1 core (pinned, jobs 1) -> 2 cores (jobs 2): %.2fx\n", wp/w2}'
if [ "${CORE_ONLY:-1}" = 1 ]; then
  core_only="$root/target/release/examples/core_only"
  # (Not `tee /dev/stderr`: with stderr redirected to a file, that reopens
  # the file and truncates everything printed before.)
  o1="$("$core_only" "$cat" 1 "$repeat")"; echo "$o1" >&2; o1="$(echo "$o1" | awk '{print $6}')"
  o2="$("$core_only" "$cat" 2 "$repeat")"; echo "$o2" >&2; o2="$(echo "$o2" | awk '{print $6}')"
  awk -v o1="$o1" -v o2="$o2" -v w1="$w1" -v w2="$w2" \
    'BEGIN{printf "core alone: speed-up %.2fx (the ceiling); pipeline wall / core alone: %.2fx with 1 job, %.2fx with 2\n", o1/o2, w1/o1, w2/o2}'
fi
