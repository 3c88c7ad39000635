//! `freshpool bench --quick --json FILE --report DIR`: every cell, the
//! verdicts that matter, and a report whose charts hold data.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const STRATEGIES: [&str; 4] = ["per-request", "no-pool", "reqwest", "freshpool"];
const SCENARIOS: [&str; 6] = [
    "burst",
    "throughput",
    "stale-fin",
    "freeze",
    "starvation",
    "unbounded",
];

fn cell<'a>(
    cells: &'a [serde_json::Value],
    scenario: &str,
    strategy: &str,
) -> &'a serde_json::Value {
    cells
        .iter()
        .find(|c| c["scenario"] == scenario && c["strategy"] == strategy)
        .unwrap_or_else(|| panic!("no cell {scenario}/{strategy}"))
}

/// Rectangles with an area that are not the canvas background: bars and
/// legend swatches.
fn data_rects(svg: &Path) -> usize {
    let text = std::fs::read_to_string(svg).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{}: not XML: {e}", svg.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let canvas: f64 = root
        .attribute("width")
        .and_then(|w| w.parse().ok())
        .unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter(|n| {
            let num = |a: &str| {
                n.attribute(a)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            num("width") > 0.0 && num("height") > 0.0 && num("width") < canvas
        })
        .count()
}

#[test]
fn quick_bench_produces_every_cell_and_a_report() {
    let dir = std::env::temp_dir().join(format!("freshpool-cli-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let report = dir.join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_freshpool"))
        .args(["bench", "--quick", "--json"])
        .arg(&json)
        .arg("--report")
        .arg(&report)
        // The bench's servers are in-process on 127.0.0.1: a proxy in the
        // environment is not used (every client went through it).
        .env("http_proxy", "http://127.0.0.1:1")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cells = doc["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 24, "4 strategies x 6 scenarios");
    for scenario in SCENARIOS {
        for strategy in STRATEGIES {
            let c = cell(cells, scenario, strategy);
            assert!(
                c["requests"].as_u64().unwrap() > 0,
                "{scenario}/{strategy}: {c}"
            );
            for field in ["rps", "connections_opened", "peak_open_connections"] {
                assert!(c[field].is_number(), "{scenario}/{strategy}: {field}");
            }
            // Latencies are of successful requests: none where none succeeded.
            let none_ok = c["requests"] == c["errors"];
            for field in ["p50_ms", "p99_ms", "max_ms"] {
                assert!(
                    c[field].is_number() || (none_ok && c[field].is_null()),
                    "{scenario}/{strategy}: {field}"
                );
            }
        }
    }
    // The verdicts: freshpool survives stale FINs and freezes, duplicates nothing.
    for scenario in ["stale-fin", "freeze"] {
        let c = cell(cells, scenario, "freshpool");
        assert_eq!(c["errors"], 0, "freshpool failed in {scenario}: {c}");
        assert_eq!(c["duplicated_posts"], 0, "{scenario}: {c}");
        // ... and the fault did cut connections it held (else 0 errors
        // proves nothing).
        assert!(c["faults_hit"].as_u64().unwrap() > 0, "{scenario}: {c}");
    }
    // stale-fin's waves of 8: only the closes a later wave met count, at
    // most 8 per pause between waves (one after the last counted up to 8
    // more that nothing met).
    // And the last wave's connections are not yet closed when they are
    // counted (a pause after it counted them all: as many cut as opened).
    let c = cell(cells, "stale-fin", "freshpool");
    let waves = c["requests"].as_u64().unwrap() / 8;
    let cut = c["faults_hit"].as_u64().unwrap();
    assert!(cut <= 8 * (waves - 1), "stale-fin: {c}");
    assert!(
        cut < c["connections_opened"].as_u64().unwrap(),
        "stale-fin: {c}"
    );
    // The cost of not pooling is visible: one connection per request.
    let per_request = cell(cells, "throughput", "per-request");
    let fp = cell(cells, "throughput", "freshpool");
    let opened = |c: &serde_json::Value| c["connections_opened"].as_u64().unwrap();
    assert!(
        opened(per_request) > 10 * opened(fp),
        "{per_request} vs {fp}"
    );
    assert!(opened(fp) <= 64, "{fp}");
    assert!(
        cell(cells, "burst", "no-pool")["connections_opened"].as_u64()
            > cell(cells, "burst", "freshpool")["connections_opened"].as_u64()
    );
    // `no-pool` is no pooling: a connection per request (it handed a
    // returned connection to the next waiting request: 212 for 4000).
    let no_pool = cell(cells, "throughput", "no-pool");
    assert_eq!(
        no_pool["connections_opened"].as_u64(),
        no_pool["requests"].as_u64(),
        "{no_pool}"
    );
    assert!(
        cell(cells, "unbounded", "freshpool")["peak_open_connections"]
            .as_u64()
            .unwrap()
            <= 64
    );
    assert!(stdout.contains("findings:"), "{stdout}");

    // The report: index.html shows SVG charts that exist and hold data.
    let index = std::fs::read_to_string(report.join("index.html")).unwrap();
    let svgs: BTreeSet<&str> = index
        .split("src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|s| s.ends_with(".svg"))
        .collect();
    assert!(svgs.len() >= 4, "charts: {svgs:?}");
    for svg in svgs {
        let path = report.join(svg);
        assert!(path.exists(), "{svg} referenced but missing");
        // 4 legend swatches + the legend box, and at least one bar.
        let rects = data_rects(&path);
        assert!(rects > 5, "{svg}: only {rects} data rectangles");
    }
    for strategy in STRATEGIES {
        assert!(index.contains(strategy), "{strategy} in the table");
    }
}

/// A cell past its time limit is a failed cell in the table and the JSON,
/// the cells before it kept, and the exit status says which did not
/// finish. (One slow cell ended the run with an error: no table, no JSON.)
#[test]
fn a_cell_past_its_limit_fails_without_losing_the_others() {
    let dir = std::env::temp_dir().join(format!("freshpool-bench-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("cells.json");
    // The starvation scenario holds bodies for 1.5 s: 300 ms is too short
    // for every strategy.
    let out = Command::new(env!("CARGO_BIN_EXE_freshpool"))
        .args([
            "bench",
            "--quick",
            "--scenario",
            "starvation",
            "--cell-limit",
            "300ms",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("did not finish") && stderr.contains("exceeded"),
        "{stderr}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cells = doc["cells"].as_array().unwrap();
    // The run stops at the unfinished cell (what it left running would
    // skew the next), which shows as failed: an error of its own.
    assert_eq!(cells.len(), 1, "{stdout}");
    let c = &cells[0];
    assert!(
        c["first_error"].as_str().unwrap_or("").contains("exceeded"),
        "{c}"
    );
    assert_eq!(c["errors"], 1, "{c}");
    assert_eq!(c["errors_by_kind"]["Unfinished"], 1, "{c}");
    assert!(stdout.contains("Unfinished"), "{stdout}");
    assert!(stderr.contains("1 of 4 cells ran"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
