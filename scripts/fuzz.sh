#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each).
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 300        # 5 min per target
#   scripts/fuzz.sh 30 config  # one target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain
# (libFuzzer's sanitizer flags); without nightly it tries the stable
# toolchain with RUSTC_BOOTSTRAP=1. Crashes are kept in
# fuzz/artifacts/<target>/; turn each into a regression test (see
# RELIABILITY.md) before fixing it. The same properties also run, bounded,
# in `cargo test` (crates/freshpool/tests/property.rs, src/health.rs,
# src/retry.rs and src/parser_props.rs), so CI covers them without
# nightly.
set -euo pipefail

seconds="${1:-60}"
shift || true
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "no nightly toolchain: trying stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <("${fuzz[@]}" list)
fi

status=0
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "corpus/$t"
    log="$(mktemp)"
    # -rss_limit_mb: the request_uri target builds a client per input.
    set +e
    "${fuzz[@]}" run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|panicked|^SUMMARY|Test unit written|^==[0-9]+== ERROR" "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "!! $t failed (exit $rc): see fuzz/artifacts/$t/" >&2
        status=1
    fi
    rm -f "$log"
done
exit $status
