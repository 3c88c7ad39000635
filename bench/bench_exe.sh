# Sourced by the scripts under bench/ (run from the repository root).
#
# bench_exe NAME: builds the freshpool bench target NAME (release, if not
# built yet) and prints the path of its executable.
bench_exe() {
    cargo bench -q -p freshpool --bench "$1" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1" | tail -1
}
