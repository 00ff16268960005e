#!/usr/bin/env bash
# Run every fuzz target (fuzz/fuzz_targets) for SECONDS each, one after
# another, at the lowest CPU priority, on its corpus in fuzz/corpus/<target>
# (new inputs are added there; minimise with
# `cargo +nightly fuzz cmin <target> fuzz/corpus/<target>` before
# committing). A crash stops the script, leaving the input in
# fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS]     # default 600 (10 minutes per target)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# QIS_FUZZ_TARGET_DIR sets the build directory (default fuzz/target).
# Prints, per target, how long it ran and how many inputs it executed.
set -euo pipefail

SECONDS_EACH="${1:-600}"
cd "$(dirname "$0")/.."
TARGET_DIR="${QIS_FUZZ_TARGET_DIR:-fuzz/target}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs the nightly toolchain and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 1
fi

targets=$(cargo +nightly fuzz list)
nice -n 19 cargo +nightly fuzz build --target-dir "$TARGET_DIR"
mkdir -p fuzz/artifacts
summary=""
for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    log="fuzz/artifacts/$t.log"
    echo "fuzz.sh: $t for ${SECONDS_EACH}s" >&2
    started=$(date +%s)
    if ! nice -n 19 cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz.sh: $t FAILED; the input is in fuzz/artifacts/$t/, the log in $log" >&2
        exit 1
    fi
    ran=$(( $(date +%s) - started ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus=$(ls "fuzz/corpus/$t" | wc -l)
    line="$t: ran ${ran}s, ${execs:-?} executions, no crash, corpus $corpus inputs"
    echo "fuzz.sh: $line" >&2
    summary+="$line"$'\n'
done
printf '%s' "$summary"
