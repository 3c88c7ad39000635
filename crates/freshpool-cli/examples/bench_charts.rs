//! Draws BENCHMARKS.md's charts from saved benchmark output.
//!
//! ```sh
//! cargo run -p freshpool-cli --example bench_charts -- \
//!     --peers docs/bench/peers.txt --scaling docs/bench/scaling.txt --out docs/bench
//! ```
//!
//! `--peers` takes the summary `bench/peers/run.sh` prints (the table of
//! clients with `req/s` and `x/limit`); `--scaling` the output of `cargo
//! bench -p freshpool --bench scaling`. Writes `peers.svg` (throughput of
//! every client, each bar labelled with its ratio to the hand-held limit)
//! and `scaling.svg` (the three scaling curves, log-log). The numbers are
//! the files' own: the charts are only a view of a measured run, and the
//! text files, with their command, machine and date, are kept beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// One client's row of the peers table.
#[derive(Debug, PartialEq)]
struct PeerRow {
    client: String,
    rps: f64,
    vs_limit: f64,
}

/// A measured value: finite and above zero (the charts' axes start at or
/// above zero, and the scaling ones are logarithmic).
fn positive(text: &str) -> Option<f64> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
}

/// `client req/s p50 p99 freshpool/x x/limit` rows (run.sh prints `-` for
/// a latency or ratio it lacks; only req/s and x/limit are needed). Other
/// lines (headings, per-round ratios) are skipped; a client row without
/// both values is skipped with a warning.
fn parse_peers(text: &str) -> Vec<PeerRow> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 || fields[0] == "client" || fields[0].starts_with('#') {
                return None;
            }
            match (positive(fields[1]), positive(fields[5])) {
                (Some(rps), Some(vs_limit)) => Some(PeerRow {
                    client: fields[0].to_owned(),
                    rps,
                    vs_limit,
                }),
                (Some(_), None) => {
                    eprintln!("bench_charts: skipped (no x/limit): {line}");
                    None
                }
                _ => None,
            }
        })
        .collect()
}

/// run.sh's per-round ratio lines (`freshpool / hyper    per round: median
/// 0.886 (min 0.749, max 1.066, 5 rounds): ...`), without the list of
/// rounds: with ROUNDS > 1 the bars are each client's median req/s, and the
/// median of the per-round ratios (steadier on a noisy host) can differ
/// from the ratio of the medians the bars are labelled with.
fn parse_per_round(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.starts_with("freshpool / ") && line.contains(" per round: "))
        .map(|line| {
            let line = line.split("): ").next().unwrap_or(line);
            let line = if line.ends_with("rounds") {
                format!("{line})")
            } else {
                line.to_owned()
            };
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// Curve name (`origins`, `idle`, `waiters`) -> series label -> (n, median ns).
type Curves = BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>;

/// Lines `CURVE N LABEL median X ns ...`; lines without a median (sweeps,
/// mass closes, headings) are skipped.
fn parse_scaling(text: &str) -> Curves {
    let mut curves = Curves::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(curve), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        if !["origins", "idle", "waiters"].contains(&curve) {
            continue;
        }
        let (Some(n), Some(at)) = (positive(n), line.find(" median ")) else {
            continue;
        };
        let Some(value) = line[at + " median ".len()..]
            .split_whitespace()
            .next()
            .and_then(positive)
        else {
            continue;
        };
        // The label is what stands between n and "median".
        let after_n = line
            .split_once(curve)
            .map_or("", |(_, rest)| rest)
            .trim_start();
        let label = after_n
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .split(" median ")
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches(':');
        let label = if label.starts_with("(still idle") {
            "checkout+return".to_owned()
        } else {
            label.to_owned()
        };
        curves
            .entry(curve.to_owned())
            .or_default()
            .entry(label)
            .or_default()
            .push((n, value));
    }
    for series in curves.values_mut().flat_map(|c| c.values_mut()) {
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    curves
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x2c, 0xa0, 0x2c),
];

fn draw_peers(
    path: &Path,
    rows: &[PeerRow],
    per_round: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows.iter().map(|r| r.rps).fold(0.0, f64::max).max(1.0);
    let mut ctx = ChartBuilder::on(&root)
        .caption(
            "requests/s, 64 concurrent keep-alive GETs (label: ratio to hand-held hyper)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..rows.len() as f64, 0f64..max * 1.2)?;
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, row) in rows.iter().enumerate() {
        let color = if row.client.contains("freshpool") {
            COLORS[0]
        } else if row.client == "rust-hyper" {
            COLORS[2]
        } else {
            COLORS[1]
        };
        let x = i as f64;
        ctx.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, row.rps)],
            color.filled(),
        )))?;
        ctx.draw_series(std::iter::once(Text::new(
            format!("{:.2}×", row.vs_limit),
            (x + 0.3, row.rps + max * 0.04),
            ("sans-serif", 15),
        )))?;
        let (px, py) = ctx.backend_coord(&(x + 0.5, 0.0));
        let width = 7 * row.client.len() as i32;
        root.draw(&Text::new(
            row.client.as_str(),
            (px - width / 2, py + 10),
            ("sans-serif", 14),
        ))?;
    }
    for (i, note) in per_round.iter().enumerate() {
        root.draw(&Text::new(
            note.as_str(),
            (380, 48 + 18 * i as i32),
            ("sans-serif", 13),
        ))?;
    }
    root.present()?;
    Ok(())
}

fn draw_scaling(path: &Path, curves: &Curves) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let titles = [
        ("origins", "checkout+return vs origins (ns)"),
        ("idle", "checkout+return vs idle connections (ns)"),
        ("waiters", "wake-up per waiter vs waiters (ns)"),
    ];
    let panels = root.split_evenly((1, titles.len()));
    for ((curve, title), panel) in titles.iter().zip(panels.iter()) {
        let Some(series) = curves.get(*curve) else {
            continue;
        };
        let points = series.values().flatten();
        let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max) * 2.0;
        let y_max = points.clone().map(|p| p.1).fold(1.0, f64::max) * 3.0;
        let y_min = points.map(|p| p.1).fold(f64::MAX, f64::min).max(1.0) / 2.0;
        let mut ctx = ChartBuilder::on(panel)
            .caption(*title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d((0.5f64..x_max).log_scale(), (y_min..y_max).log_scale())?;
        ctx.configure_mesh()
            .x_desc("n")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        for (k, (label, values)) in series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            ctx.draw_series(LineSeries::new(
                values.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
            ctx.draw_series(values.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn run(args: &[String]) -> Result<Vec<PathBuf>, String> {
    for arg in args {
        if arg.starts_with("--") && !["--peers", "--scaling", "--out"].contains(&arg.as_str()) {
            return Err(format!("unknown flag {arg}"));
        }
    }
    let value = |flag: &str| -> Result<Option<PathBuf>, String> {
        match args.iter().position(|a| a == flag) {
            None => Ok(None),
            Some(i) => match args.get(i + 1) {
                Some(v) if !v.starts_with("--") => Ok(Some(PathBuf::from(v))),
                _ => Err(format!("{flag} needs a path")),
            },
        }
    };
    let out = value("--out")?.ok_or("--out DIR is required")?;
    // (Every flag checked before anything is made: a bad command line
    // left an empty output folder behind.)
    let (peers, scaling) = (value("--peers")?, value("--scaling")?);
    if peers.is_none() && scaling.is_none() {
        return Err("nothing to draw: give --peers FILE and/or --scaling FILE".into());
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut written = Vec::new();
    if let Some(path) = peers {
        let text = read(&path)?;
        let rows = parse_peers(&text);
        if rows.is_empty() {
            return Err(format!("{}: no client rows found", path.display()));
        }
        let svg = out.join("peers.svg");
        draw_peers(&svg, &rows, &parse_per_round(&text))
            .map_err(|e| format!("cannot draw {}: {e}", svg.display()))?;
        written.push(svg);
    }
    if let Some(path) = scaling {
        let curves = parse_scaling(&read(&path)?);
        if curves.is_empty() {
            return Err(format!("{}: no scaling lines found", path.display()));
        }
        let svg = out.join("scaling.svg");
        draw_scaling(&svg, &curves).map_err(|e| format!("cannot draw {}: {e}", svg.display()))?;
        written.push(svg);
    }
    Ok(written)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        Err(e) => {
            eprintln!("bench_charts: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEERS: &str = "\
## 64 concurrent keep-alive GETs x 100000 against http://127.0.0.1:43033
client                     req/s    p50 us    p99 us  freshpool/x   x/limit
freshpool-load             85590       670      2070         1.12      0.81
rust-freshpool             95442       600      1559         1.00      0.91
rust-hyper                105038       535      1185         0.91      1.00   <- the limit
go-net/http                47933      1118      5491         1.99      0.46
freshpool / hyper    per round: median 0.890 (min 0.812, max 0.910, 3 rounds)
";

    const SCALING: &str = "\
## checkout+return vs number of origins (one idle connection each)
origins      1  hot:      median       93 ns  mean       97 ns  worst batch      147 ns   (setup 336.3µs)
origins      1  rotating: median      131 ns  mean      127 ns  worst batch      211 ns
origins      1  idle sweep (evict_idle, nothing expired): 110.0ns
origins      1  rotating, hand-held floor: median       17 ns  mean       18 ns  worst batch      103 ns
origins  10000  rotating: median      778 ns  mean      820 ns  worst batch     1750 ns
idle    100 (still idle after:    100)  median      126 ns  mean      127 ns  worst batch      341 ns   (setup 1.1s)
idle    100  server closed all: pool emptied in 6.4ms, 64.3 us per close (left 0)
waiters  10000  per waiter: median     1286 ns  mean     1395 ns  worst batch     2232 ns   all served: median 12.9ms  marginal: 1284 ns/waiter
";

    #[test]
    fn peers_rows_are_read_and_other_lines_skipped() {
        let rows = parse_peers(PEERS);
        let clients: Vec<&str> = rows.iter().map(|r| r.client.as_str()).collect();
        assert_eq!(
            clients,
            [
                "freshpool-load",
                "rust-freshpool",
                "rust-hyper",
                "go-net/http"
            ]
        );
        assert_eq!(rows[1].rps, 95442.0);
        assert_eq!(rows[1].vs_limit, 0.91);
        assert_eq!(rows[3].vs_limit, 0.46);
    }

    #[test]
    fn scaling_medians_are_read_by_curve_and_series() {
        let curves = parse_scaling(SCALING);
        let origins = &curves["origins"];
        assert_eq!(origins["hot"], [(1.0, 93.0)]);
        assert_eq!(origins["rotating"], [(1.0, 131.0), (10000.0, 778.0)]);
        assert_eq!(origins["rotating, hand-held floor"], [(1.0, 17.0)]);
        assert_eq!(origins.len(), 3, "the sweep line is not a series");
        assert_eq!(curves["idle"]["checkout+return"], [(100.0, 126.0)]);
        assert_eq!(
            curves["idle"].len(),
            1,
            "the mass-close line is not a series"
        );
        assert_eq!(curves["waiters"]["per waiter"], [(10000.0, 1286.0)]);
    }

    #[test]
    fn charts_are_svg_with_every_client_and_series() {
        let dir = std::env::temp_dir().join(format!("bench-charts-{}", std::process::id()));
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let args: Vec<String> = [
            "--peers",
            &write("peers.txt", PEERS),
            "--scaling",
            &write("scaling.txt", SCALING),
            "--out",
            &dir.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let files = run(&args).expect("charts drawn");
        assert_eq!(files.len(), 2);
        assert_texts(
            &dir.join("peers.svg"),
            &[
                "rust-freshpool",
                "rust-hyper",
                "go-net/http",
                "0.91×",
                "0.46×",
                "freshpool / hyper per round: median 0.890 (min 0.812, max 0.910, 3 rounds)",
            ],
        );
        // Each series is its own text node (the legend), apart from the
        // panel titles that share words with it.
        assert_texts(
            &dir.join("scaling.svg"),
            &[
                "hot",
                "rotating",
                "rotating, hand-held floor",
                "checkout+return",
                "per waiter",
            ],
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The SVG file is well-formed and has each label as a whole text node.
    fn assert_texts(path: &Path, labels: &[&str]) {
        let svg = std::fs::read_to_string(path).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let texts: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for label in labels {
            assert!(
                texts.contains(label),
                "{} lacks {label}: {texts:?}",
                path.display()
            );
        }
    }

    #[test]
    fn the_saved_runs_beside_the_charts_parse_whole() {
        let peers = parse_peers(include_str!("../../../docs/bench/peers.txt"));
        let clients: Vec<&str> = peers.iter().map(|r| r.client.as_str()).collect();
        assert_eq!(
            clients,
            [
                "freshpool-load",
                "rust-freshpool",
                "rust-hyper",
                "rust-reqwest",
                "go-net/http",
                "python-aiohttp"
            ]
        );
        assert_eq!(peers[2].vs_limit, 1.0, "rust-hyper is the limit");
        let notes = parse_per_round(include_str!("../../../docs/bench/peers.txt"));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("freshpool / hyper per round: median "));
        let curves = parse_scaling(include_str!("../../../docs/bench/scaling.txt"));
        let sizes = [1.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0];
        for (curve, series) in &curves {
            for (label, points) in series {
                let ns: Vec<f64> = points.iter().map(|p| p.0).collect();
                assert_eq!(ns, sizes, "{curve} / {label}");
            }
        }
        let labels: Vec<&str> = curves["origins"].keys().map(String::as_str).collect();
        assert_eq!(
            labels.len(),
            4,
            "hot, rotating and the two floors: {labels:?}"
        );
        assert!(labels.contains(&"rotating, hand-held floor, chained"));
    }

    #[test]
    fn values_that_are_not_measurements_are_skipped() {
        let rows =
            parse_peers("a 100 1 2 1.0 inf\nb NaN 1 2 1.0 0.5\nc 100 - - - -\nd 100 - - 1.0 0.5\n");
        let clients: Vec<&str> = rows.iter().map(|r| r.client.as_str()).collect();
        assert_eq!(clients, ["d"]);
        let curves = parse_scaling(
            "origins 100 hot: median inf ns\norigins 0 hot: median 5 ns\norigins 10 hot: median 7 ns\norigins 1 hot: median 9 ns\n",
        );
        assert_eq!(
            curves["origins"]["hot"],
            [(1.0, 9.0), (10.0, 7.0)],
            "sorted by n"
        );
    }

    #[test]
    fn a_flag_without_its_path_is_an_error() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(run(&args(&["--peers", "--out", "d"]))
            .unwrap_err()
            .contains("--peers needs a path"));
        assert!(run(&args(&["--out"]))
            .unwrap_err()
            .contains("--out needs a path"));
        assert!(run(&args(&["--out", "d", "--chart", "x"]))
            .unwrap_err()
            .contains("unknown flag"));
        let out = std::env::temp_dir().join(format!("bench-charts-bad-{}", std::process::id()));
        let out_arg = out.to_string_lossy().into_owned();
        assert!(run(&args(&["--out", &out_arg]))
            .unwrap_err()
            .contains("nothing to draw"));
        assert!(!out.exists(), "a bad command line makes no output folder");
    }

    #[test]
    fn input_without_rows_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("bench-charts-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let args: Vec<String> = [
            "--peers",
            &empty.to_string_lossy(),
            "--out",
            &dir.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let err = run(&args).unwrap_err();
        assert!(err.contains("no client rows"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
