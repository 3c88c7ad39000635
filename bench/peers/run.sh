#!/usr/bin/env bash
# Runs every client against the same loopback server in one go and prints
# one line per client plus a table of ratios:
#   freshpool load (the CLI), the freshpool library, hand-held hyper
#   connections ("the limit"), the same connections shared through a
#   mutex-guarded LIFO stack (`hyper-lifo`: the least pool there is),
#   reqwest, Go net/http, Python aiohttp.
#
# Usage: bench/peers/run.sh [URL]
#   URL  an http:// URL to test (default: start `freshpool bench --serve`,
#        or, if that subcommand is not available, the testkit server built
#        into the `scaling` bench binary).
# Env:   N (requests per client, default 100000), C (concurrency, default 64),
#        SKIP_INSTALL=1 (do not apt-get/pip install Go or aiohttp),
#        REQUEST_EXE / SCALING_EXE (bench binaries to run instead of this
#        tree's: to compare two builds side by side),
#        CLIENTS (default "freshpool-load rust go python"),
#        ROUNDS (default 1): run the four Rust clients this many times, the
#        order rotating each round; the summary then gives each client's
#        median req/s and the median of the per-round ratios (this host's
#        throughput drifts within minutes: a ratio of two runs seconds
#        apart is steadier than one of two medians).
#        SERVER_PID: the pid of the server behind URL, when URL is given
#        (the script knows its own server's): the Rust clients then also
#        report the server's CPU per request while each ran
#        (`server_cpu_us`, from /proc).
#
# Installs golang-go (Debian) and aiohttp (pip) if missing: run it on a dev
# machine, never in CI.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
N=${N:-100000}
C=${C:-64}
CLIENTS=${CLIENTS:-"freshpool-load rust go python"}
ROUNDS=${ROUNDS:-1}
OUT=$ROOT/target/peers
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: > "$RESULTS"
NOTES=()
# The server whose CPU the Rust clients read (see `server_cpu_us`).
export FRESHPOOL_PEER_SERVER_PID=${SERVER_PID:-}
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
    if [ -n "${HOLD_PID:-}" ]; then kill "$HOLD_PID" 2>/dev/null; fi
}
trap cleanup EXIT

echo "# machine: $(nproc) cores, $(uptime | sed 's/.*load/load/'), $(date -u +%FT%TZ)"

# --- installs (dev machines only) -------------------------------------------
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    if ! command -v go >/dev/null 2>&1; then
        echo "# installing golang-go (apt-get)"
        if ! (apt-get install -y golang-go >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y golang-go >/dev/null 2>&1)); then
            NOTES+=("Go: apt-get install golang-go failed; Go peer skipped")
        fi
    fi
    if ! python3 -c 'import aiohttp' >/dev/null 2>&1; then
        echo "# installing aiohttp (pip)"
        pip install -q aiohttp >/dev/null 2>&1 || NOTES+=("Python: pip install aiohttp failed; aiohttp peer skipped")
    fi
fi

# --- builds ------------------------------------------------------------------
echo "# building (release)"
cargo build --release -q -p freshpool-cli || NOTES+=("freshpool-cli failed to build")
. bench/bench_exe.sh # bench_exe NAME: a bench target's executable
# (Given in the environment: to compare two builds of the Rust clients.)
REQUEST_EXE=${REQUEST_EXE:-$(bench_exe request)}
SCALING_EXE=${SCALING_EXE:-$(bench_exe scaling)}
FRESHPOOL=$ROOT/target/release/freshpool

# --- the server ----------------------------------------------------------------
URL=${1:-}
if [ -z "$URL" ] && [ -x "$FRESHPOOL" ]; then
    "$FRESHPOOL" bench --serve --serve-for 300s > "$OUT/serve.log" 2>&1 &
    SERVER_PID=$!
    FRESHPOOL_PEER_SERVER_PID=$SERVER_PID
    for _ in $(seq 1 100); do
        URL=$(awk '$1 == "http1" { print $2; exit }' "$OUT/serve.log")
        [ -n "$URL" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    if [ -n "$URL" ]; then
        echo "# server: freshpool bench --serve ($URL)"
    else
        kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
        NOTES+=("freshpool bench --serve not available ($(head -c 200 "$OUT/serve.log" | tr '\n' ' ')); used the testkit server of the scaling bench binary")
    fi
fi
if [ -z "$URL" ]; then
    # The scaling bench binary serves the testkit HTTP/1.1 server (1 worker
    # thread) until its stdin closes; it prints its address first.
    rm -f "$OUT/hold"; mkfifo "$OUT/hold"
    sleep 100000 > "$OUT/hold" & HOLD_PID=$!
    FRESHPOOL_BENCH_ROLE=server "$SCALING_EXE" < "$OUT/hold" > "$OUT/serve.log" 2>&1 &
    SERVER_PID=$!
    FRESHPOOL_PEER_SERVER_PID=$SERVER_PID
    for _ in $(seq 1 50); do
        ADDR=$(head -1 "$OUT/serve.log" 2>/dev/null)
        [ -n "$ADDR" ] && break
        sleep 0.1
    done
    URL="http://$ADDR/"
    echo "# server: freshpool-testkit (scaling bench binary) at $URL"
fi

# --- the clients ---------------------------------------------------------------
run() { # name, command...
    local name=$1; shift
    echo "# running $name"
    local line
    if line=$("$@" 2>"$OUT/$name.err"); then
        printf '%s\n' "$line" | tee -a "$RESULTS"
    else
        NOTES+=("$name failed: $(tail -c 300 "$OUT/$name.err" | tr '\n' ' ')")
    fi
}
for client in $CLIENTS; do
    case $client in
    freshpool-load)
        if [ -x "$FRESHPOOL" ]; then
            echo "# running freshpool load"
            if "$FRESHPOOL" load "$URL" -c "$C" -n "$N" > "$OUT/load.out" 2>&1; then
                cat "$OUT/load.out"
                # Accept `rps=X`, `Requests/s: X` or `X req/s`; pN as `pN_us=X` or `pN  X ms`.
                RPS=$(grep -oE 'rps=[0-9.]+' "$OUT/load.out" | head -1 | cut -d= -f2)
                [ -z "$RPS" ] && RPS=$(grep -oiE 'requests/s:? *[0-9][0-9.,]*' "$OUT/load.out" | head -1 | grep -oE '[0-9][0-9.,]*$' | tr -d ,)
                [ -z "$RPS" ] && RPS=$(grep -oiE '[0-9][0-9.,]* *(req/s|requests/s|rps)' "$OUT/load.out" | head -1 | grep -oE '^[0-9][0-9.,]*' | tr -d ,)
                pct_us() { # p50 -> microseconds
                    awk -v k="$1" '$1 == k && NF >= 3 { v = $2; u = $3; if (u == "ms") v *= 1000; else if (u == "s") v *= 1000000; printf "%.0f", v; exit }
                                   $0 ~ k"_us=" { match($0, k"_us=[0-9.]+"); print substr($0, RSTART + length(k) + 4, RLENGTH - length(k) - 4); exit }' "$OUT/load.out"
                }
                P50=$(pct_us p50); P99=$(pct_us p99)
                echo "peer=freshpool-load concurrency=$C requests=$N rps=${RPS:-?} p50_us=${P50:-?} p99_us=${P99:-?}" | tee -a "$RESULTS"
            else
                NOTES+=("freshpool load failed: $(tail -c 300 "$OUT/load.out" | tr '\n' ' ')")
            fi
        fi
        ;;
    rust)
        # hyper-lifo: the hand-held connections shared through a mutex over a
        # LIFO stack, the least pool there is (what sharing alone costs).
        orders=("freshpool,hyper,hyper-lifo,reqwest" "hyper,hyper-lifo,reqwest,freshpool"
            "hyper-lifo,reqwest,freshpool,hyper" "reqwest,freshpool,hyper,hyper-lifo")
        for round in $(seq 1 "$ROUNDS"); do
            order=${orders[$(((round - 1) % 4))]}
            echo "# running Rust peers (freshpool library, hand-held hyper, hand-held hyper shared LIFO, reqwest), round $round/$ROUNDS: $order"
            FRESHPOOL_PEER_URL=$URL FRESHPOOL_PEER_CLIENTS=$order C=$C N=$N "$REQUEST_EXE" 2>"$OUT/rust.err" |
                sed "s/\$/ round=$round/" | tee -a "$RESULTS" ||
                NOTES+=("rust peers failed: $(tail -c 300 "$OUT/rust.err")")
        done
        ;;
    go)
        if command -v go >/dev/null 2>&1; then
            (cd bench/peers/go && GOFLAGS=-mod=mod go build -o "$OUT/go-peer" . 2>"$OUT/go-build.err") ||
                NOTES+=("Go peer failed to build: $(tail -c 300 "$OUT/go-build.err")")
            [ -x "$OUT/go-peer" ] && run go "$OUT/go-peer" -url "$URL" -c "$C" -n "$N"
        else
            NOTES+=("Go not installed: Go peer skipped")
        fi
        ;;
    python)
        if python3 -c 'import aiohttp' >/dev/null 2>&1; then
            run python python3 bench/peers/aiohttp_peer.py "$URL" -c "$C" -n "$N"
        else
            NOTES+=("aiohttp not installed: Python peer skipped")
        fi
        ;;
    esac
done

# --- summary -------------------------------------------------------------------
echo
echo "## $C concurrent keep-alive GETs x $N against $URL"
python3 - "$RESULTS" <<'PY'
import re, statistics, sys
rows = []
for line in open(sys.argv[1]):
    kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
    if "peer" in kv:
        rows.append(kv)
def num(v):
    try: return float(v)
    except (TypeError, ValueError): return None
# One row per client: the median over rounds where a client ran repeatedly.
by_peer = {}
for r in rows:
    by_peer.setdefault(r["peer"], []).append(r)
def med(rs, key):
    vals = [v for v in (num(r.get(key)) for r in rs) if v is not None]
    return statistics.median(vals) if vals else None
ref = {p: med(rs, "rps") for p, rs in by_peer.items()}
base = ref.get("rust-freshpool")
limit = ref.get("rust-hyper")
rounds = max((len(rs) for rs in by_peer.values()), default=1)
if rounds > 1:
    print(f"(median of {rounds} rounds for the Rust clients)")
print(f'{"client":<22}{"req/s":>10}{"p50 us":>10}{"p99 us":>10}{"freshpool/x":>13}{"x/limit":>10}')
for p, rs in by_peer.items():
    rps = ref[p]
    fp = f"{base / rps:.2f}" if base and rps else "-"
    lim = f"{rps / limit:.2f}" if limit and rps else "-"
    p50, p99 = med(rs, "p50_us"), med(rs, "p99_us")
    show = lambda v: f"{v:.0f}" if v is not None else "-"
    print(f'{p:<22}{(f"{rps:.0f}" if rps else "?"):>10}{show(p50):>10}{show(p99):>10}{fp:>13}{lim:>10}')
if rounds > 1:
    per_round = {}
    for r in rows:
        if "round" in r and num(r.get("rps")):
            per_round.setdefault(r["round"], {})[r["peer"]] = num(r["rps"])
    for other in ("rust-hyper", "rust-hyper-lifo", "rust-reqwest"):
        ratios = sorted(v["rust-freshpool"] / v[other] for v in per_round.values()
                        if "rust-freshpool" in v and other in v)
        if ratios:
            print(f"freshpool / {other[5:]:<10} per round: median {statistics.median(ratios):.3f} "
                  f"(min {ratios[0]:.3f}, max {ratios[-1]:.3f}, {len(ratios)} rounds): "
                  + " ".join(f"{x:.2f}" for x in ratios))
# The client's own CPU per request (Rust clients: user + system time of the
# client process over the timed requests). Unlike req/s it does not move
# with the pacing of a server that shares the machine.
cpu = {p: med(rs, "cpu_us") for p, rs in by_peer.items()}
if any(v for v in cpu.values()):
    print("client CPU per request (median over rounds): "
          + ", ".join(f"{p} {v:.2f} us" for p, v in cpu.items() if v))
    cpu_rounds = {}
    for r in rows:
        if "round" in r and num(r.get("cpu_us")):
            cpu_rounds.setdefault(r["round"], {})[r["peer"]] = num(r["cpu_us"])
    ratios = sorted(v["rust-hyper"] / v["rust-freshpool"] for v in cpu_rounds.values()
                    if "rust-freshpool" in v and "rust-hyper" in v)
    if ratios:
        print(f"hand-held hyper CPU / freshpool CPU per request, per round: median "
              f"{statistics.median(ratios):.3f} (min {ratios[0]:.3f}, max {ratios[-1]:.3f}, "
              f"{len(ratios)} rounds): " + " ".join(f"{x:.2f}" for x in ratios))
# The server's CPU per request while each client ran (with SERVER_PID or the
# script's own server): on a 2-core machine the server shares the CPU with
# the client, so a client whose requests cost the server more is slower
# for that too.
server = {p: med(rs, "server_cpu_us") for p, rs in by_peer.items()}
if any(v is not None for v in server.values()):
    print("server CPU per request while each client ran (median over rounds): "
          + ", ".join(f"{p} {v:.2f} us" for p, v in server.items() if v is not None))
# How often each client's threads parked (voluntary context switches per
# 1,000 requests). A client that parks often does not fill its threads: its
# req/s is paced by latency, and its ratio to a client that does fill them
# says less than their CPU per request does.
parks = {p: med(rs, "parks_per_1k") for p, rs in by_peer.items()}
if any(v is not None for v in parks.values()):
    print("client thread parks per 1,000 requests (median over rounds): "
          + ", ".join(f"{p} {v:.1f}" for p, v in parks.items() if v is not None))
PY
for note in "${NOTES[@]}"; do echo "NOTE: $note"; done
