#!/usr/bin/env bash
# Instructions per operation, counted by valgrind (callgrind), side by side
# in one run:
#   - one keep-alive GET through freshpool, through a hand-held hyper
#     connection (the limit) and through reqwest: the client's work only
#     (the alloc bench's FRESHPOOL_PROFILE loop: sequential requests on the
#     main thread, counted apart from the server's threads);
#   - one uncontended checkout+return;
#   - one checkout+return rotating over 100, 1,000 and 10,000 origins (the
#     scaling bench's loops), which shows whether the pool's work grows with
#     the number of origins;
#   - one request on the paths bench's other paths (h2c with 64 streams on
#     one connection, a 1 MiB response body, a 1 KiB POST) through freshpool
#     and through hand-held hyper: the client thread's work per request.
#
# Why: wall-clock ratios on a shared 2-core VM scatter by +-15 % from round
# to round (BENCHMARKS.md). Instruction counts do not depend on the host's
# load or speed, so their ratios can be compared across runs and machines.
# They are not a substitute for the timed benchmarks (cache misses, atomics
# and syscalls cost far more than their one instruction each); read them
# beside those.
#
# Usage: bench/instructions.sh
# Env:   N (requests or checkouts per profile, default 20000),
#        OPS (rotating checkouts per origin count, default 30000),
#        SKIP_INSTALL=1 (do not apt-get valgrind),
#        ALLOC_EXE, SCALING_EXE and PATHS_EXE (bench binaries to count
#        instead of building this tree's: to compare two builds).
# Installs valgrind (apt-get) if missing: a dev-machine tool, not for CI.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
OPS=${OPS:-30000}
# The scaling bench's warm-up batch (`BATCH` in benches/scaling.rs): each
# timed loop runs OPS + BATCH checkouts.
BATCH=1000
OUT=${OUT:-target/instructions}
mkdir -p "$OUT"

if ! command -v valgrind >/dev/null 2>&1; then
    if [ "${SKIP_INSTALL:-0}" = 1 ]; then
        echo "valgrind not installed (SKIP_INSTALL=1)" >&2
        exit 1
    fi
    echo "# installing valgrind (apt-get)"
    apt-get install -y valgrind >/dev/null 2>&1 ||
        (apt-get update >/dev/null 2>&1 && apt-get install -y valgrind >/dev/null 2>&1)
fi

. bench/bench_exe.sh # bench_exe NAME: a bench target's executable
if [ -z "${ALLOC_EXE:-}" ] || [ -z "${SCALING_EXE:-}" ] || [ -z "${PATHS_EXE:-}" ]; then
    echo "# building the benches (release)"
    ALLOC_EXE=$(bench_exe alloc)
    SCALING_EXE=$(bench_exe scaling)
    PATHS_EXE=$(bench_exe paths)
    BUILT="commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
else
    BUILT="given binaries $ALLOC_EXE, $SCALING_EXE, $PATHS_EXE"
fi

# callgrind's total for the collected functions of one run.
total() {
    # (awk reads to the end: an early exit would fail the pipe.)
    callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }'
}

echo "# machine: $(nproc) cores, $(date -u +%FT%TZ), $BUILT"
# The loop's setup (every mode builds all three clients and warms each with
# one request) counted once, with no loop, and taken off each mode's total.
FRESHPOOL_PROFILE=hyper FRESHPOOL_PROFILE_N=0 valgrind --tool=callgrind \
    --separate-threads=yes --callgrind-out-file="$OUT/setup.cg" \
    "$ALLOC_EXE" >"$OUT/setup.log" 2>&1
SETUP=$(total "$OUT/setup.cg-01")
declare -A PER_OP
for mode in freshpool hyper reqwest checkout; do
    echo "# callgrind: $mode x $N"
    # The client runs on the main thread (a current-thread runtime): its
    # file, `-01`, counts the client's work; the server's threads have
    # their own.
    FRESHPOOL_PROFILE=$mode FRESHPOOL_PROFILE_N=$N valgrind --tool=callgrind \
        --separate-threads=yes --callgrind-out-file="$OUT/$mode.cg" \
        "$ALLOC_EXE" >"$OUT/$mode.log" 2>&1
    PER_OP[$mode]=$(python3 -c "print(round(($(total "$OUT/$mode.cg-01") - $SETUP) / $N))")
done

declare -A ROT
for n in 1 100 1000 10000; do
    echo "# callgrind: checkout+return over $n origins, 2 x $((OPS + BATCH)) checkouts"
    FRESHPOOL_SCALING_SIZES=$n FRESHPOOL_SCALING_CURVES=origins FRESHPOOL_SCALING_OPS=$OPS \
        valgrind --tool=callgrind --toggle-collect='*time_checkouts*' \
        --callgrind-out-file="$OUT/origins-$n.cg" "$SCALING_EXE" >"$OUT/origins-$n.log" 2>&1 ||
        echo "#   failed (see $OUT/origins-$n.log; seen at 10,000 origins on a busy machine)"
    ROT[$n]=$(total "$OUT/origins-$n.cg")
    ROT[$n]=${ROT[$n]:-0}
done

# The paths bench: its setup (servers, both clients' connections and
# warm-up) counted once per scenario with no round, then one round of one
# client; the client runs on the main thread (`-01`).
PATHS_ROWS=""
for scenario in 0 1 2; do
    echo "# callgrind: paths bench, scenario $scenario"
    FRESHPOOL_PATHS_ONLY=$scenario FRESHPOOL_PATHS_ROUNDS=0 valgrind --tool=callgrind \
        --separate-threads=yes --callgrind-out-file="$OUT/paths-$scenario-setup.cg" \
        "$PATHS_EXE" >"$OUT/paths-$scenario-setup.log" 2>&1
    row="$(grep -o 'requests_per_round=[0-9]*' "$OUT/paths-$scenario-setup.log" | cut -d= -f2)"
    row="$row $(total "$OUT/paths-$scenario-setup.cg-01")"
    for client in freshpool hand-held; do
        FRESHPOOL_PATHS_ONLY=$scenario FRESHPOOL_PATHS_ROUNDS=1 FRESHPOOL_PATHS_CLIENT=$client \
            valgrind --tool=callgrind --separate-threads=yes \
            --callgrind-out-file="$OUT/paths-$scenario-$client.cg" \
            "$PATHS_EXE" >"$OUT/paths-$scenario-$client.log" 2>&1
        row="$row $(total "$OUT/paths-$scenario-$client.cg-01")"
    done
    PATHS_ROWS="$PATHS_ROWS$row;"
done

python3 - "$OPS" "$BATCH" "${PER_OP[freshpool]}" "${PER_OP[hyper]}" "${PER_OP[reqwest]}" \
    "${PER_OP[checkout]}" "${ROT[1]}" "${ROT[100]}" "${ROT[1000]}" "${ROT[10000]}" <<'PY'
import sys
ops, batch, fresh, hyper, reqwest, checkout, r1, r100, r1000, r10000 = map(int, sys.argv[1:])
k = ops + batch
print()
print("## instructions per GET (client side, sequential keep-alive GETs)")
print(f"{'client':<22}{'instructions':>14}{'x/limit':>10}")
for name, v in (("freshpool", fresh), ("hand-held hyper", hyper), ("reqwest", reqwest)):
    print(f"{name:<22}{v:>14,}{v / hyper:>10.3f}")
print(f"freshpool's overhead over the limit: {fresh - hyper:,} instructions ({(fresh / hyper - 1) * 100:+.1f} %);"
      f" reqwest / freshpool = {reqwest / fresh:.2f}")
print()
print("## instructions per checkout+return")
print(f"uncontended (alloc bench hook): {checkout:,}")
# At n = 1 both timed loops (hot, rotating) take the same origin: the hot
# cost is half of that run per checkout; each rotating cost is what its
# run adds over one hot loop.
hot = r1 / (2 * k)
print(f"hot, one origin (scaling bench): {hot:,.0f}")
for n, t in ((100, r100), (1000, r1000), (10000, r10000)):
    if t:
        print(f"rotating over {n:>6,} origins: {t / k - hot:>7,.0f}")
    else:
        print(f"rotating over {n:>6,} origins: (failed)")
print("(Under valgrind a pass over 10,000 origins takes longer than validate_after_idle,"
      " so part of its checkouts also peek at the socket: a syscall the native run does not make.)")
PY

python3 - "$PATHS_ROWS" <<'PY'
import sys
names = ["h2c GET /, 64 streams, one connection", "HTTP/1.1 GET 1 MiB body", "HTTP/1.1 POST 1 KiB (echoed)"]
print()
print("## instructions per request on other paths (paths bench; client thread)")
print(f"{'scenario':<40}{'freshpool':>12}{'hand-held':>12}{'x/limit':>10}")
for name, row in zip(names, sys.argv[1].strip(";").split(";")):
    n, setup, fresh, held = map(int, row.split())
    f, h = (fresh - setup) / n, (held - setup) / n
    print(f"{name:<40}{f:>12,.0f}{h:>12,.0f}{f / h:>10.3f}")
PY
