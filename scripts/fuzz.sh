#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), one after the
# other (this machine has two cores: never two at once), on the stable
# toolchain (RUSTC_BOOTSTRAP=1 lets it take the flags cargo-fuzz passes).
# Each target grows its corpus in a scratch directory seeded from
# fuzz/corpus/; a crash, leak or timeout is copied into fuzz/corpus/ as
# crash_TARGET_HASH, so `cargo test` (tests/fuzz_corpus.rs) replays it from
# then on, and the script ends non-zero naming it.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (cargo install cargo-fuzz --locked).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
seed_dir() {
    case "$1" in
        repair) echo corpus/repair ;;
        server_*) echo corpus/server ;;
        *) echo corpus/stl ;;
    esac
}
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
    seeds="$(seed_dir "$target")"
    mkdir -p "$scratch/$target" "artifacts/$target"
    echo "== $target: ${secs} s from $seeds"
    if ! cargo fuzz run -O "$target" "$scratch/$target" "$seeds" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1; then
        failed+=("$target")
    fi
    grep -E "^stat::number_of_executed_units|^Done [0-9]+ runs" "$scratch/$target.log" | tail -n 1 || true
    for artifact in artifacts/"$target"/*; do
        [ -f "$artifact" ] || continue
        name="crash_${target}_$(sha1sum "$artifact" | cut -c1-12)"
        cp "$artifact" "$seeds/$name"
        echo "   kept $seeds/$name (from $artifact)"
        rm -f "$artifact"
    done
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (inputs kept under fuzz/corpus; the first log ends:)" >&2
    tail -n 30 "$scratch/${failed[0]}.log" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${secs} s without a failure"
