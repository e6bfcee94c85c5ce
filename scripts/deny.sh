#!/usr/bin/env bash
# cargo deny check (advisories, licences, bans, sources) against deny.toml.
# Needs cargo-deny (`cargo install --locked cargo-deny`). Without network,
# set STRATA_ADVISORY_DB to a local clone of the RustSec advisory database.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deny --version >/dev/null 2>&1; then
    echo "cargo-deny is not installed: cargo install --locked cargo-deny" >&2
    exit 2
fi
args=()
if [ -n "${STRATA_ADVISORY_DB:-}" ]; then
    mkdir -p "$HOME/.cargo"
    ln -sfn "$STRATA_ADVISORY_DB" "$HOME/.cargo/advisory-db"
    args+=(--offline)
fi
exec cargo deny "${args[@]}" check
