//! The bench report: grouped bar charts (SVG, drawn with plotters) and an
//! `index.html` that shows them with the table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::bench::Cell;

/// Strategy colours, in table order (per-request, no-pool, reqwest, freshpool).
const COLORS: [RGBColor; 4] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x1f, 0x77, 0xb4),
];

/// One chart of the report.
struct Chart {
    file: &'static str,
    title: &'static str,
    value: fn(&Cell) -> f64,
}

const CHARTS: [Chart; 5] = [
    Chart {
        file: "requests_per_second.svg",
        title: "successful requests/s (higher is better)",
        value: |c| c.rps,
    },
    Chart {
        file: "p99_latency.svg",
        title: "p99 latency, ms (lower is better; n/a: no request succeeded)",
        // (No bar where no request succeeded.)
        value: |c| c.p99_ms.unwrap_or(f64::NAN),
    },
    Chart {
        file: "connections_opened.svg",
        title: "connections opened (lower is better)",
        value: |c| c.connections_opened as f64,
    },
    Chart {
        file: "peak_open_connections.svg",
        title: "peak open connections at the server",
        value: |c| c.peak_open_connections as f64,
    },
    Chart {
        file: "errors.svg",
        title: "failed requests (lower is better)",
        value: |c| c.errors as f64,
    },
];

fn unique(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Writes the charts and `index.html` into `dir` (created if missing);
/// returns the path of `index.html`.
pub fn write(dir: &Path, cells: &[Cell], table: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let scenarios = unique(cells.iter().map(|c| c.scenario.clone()));
    let strategies = unique(cells.iter().map(|c| c.strategy.clone()));
    for chart in &CHARTS {
        let path = dir.join(chart.file);
        draw(&path, chart, cells, &scenarios, &strategies)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
    }
    let index = dir.join("index.html");
    std::fs::write(&index, html(cells, table))
        .map_err(|e| format!("cannot write {}: {e}", index.display()))?;
    Ok(index)
}

fn draw(
    path: &Path,
    chart: &Chart,
    cells: &[Cell],
    scenarios: &[String],
    strategies: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let group = (strategies.len() + 1) as f64;
    let max = cells.iter().map(chart.value).fold(0.0, f64::max);
    // Headroom above the tallest bar keeps the legend clear of the bars.
    let y_max = if max > 0.0 { max * 1.4 } else { 1.0 };
    let mut ctx = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..(scenarios.len() as f64 * group), 0f64..y_max)?;
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (j, strategy) in strategies.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let bars = scenarios.iter().enumerate().filter_map(|(i, scenario)| {
            let cell = cells
                .iter()
                .find(|c| &c.scenario == scenario && &c.strategy == strategy)?;
            let x0 = i as f64 * group + 0.5 + j as f64;
            let value = Some((chart.value)(cell)).filter(|v| !v.is_nan())?;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + 0.9, value)],
                color.filled(),
            ))
        });
        ctx.draw_series(bars)?
            .label(strategy.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        // No bar where no request succeeded: a gap would read as the best
        // figure of a "lower is better" chart. Marked "n/a" instead.
        let missing = scenarios.iter().enumerate().filter_map(|(i, scenario)| {
            let cell = cells
                .iter()
                .find(|c| &c.scenario == scenario && &c.strategy == strategy)?;
            let x0 = i as f64 * group + 0.5 + j as f64;
            (chart.value)(cell).is_nan().then(|| {
                Text::new(
                    "n/a",
                    (x0, y_max * 0.04),
                    ("sans-serif", 11).into_font().color(&color),
                )
            })
        });
        ctx.draw_series(missing)?;
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    for (i, scenario) in scenarios.iter().enumerate() {
        let (px, py) = ctx.backend_coord(&((i as f64 + 0.5) * group, 0.0));
        let width = 7 * scenario.len() as i32;
        root.draw(&Text::new(
            scenario.as_str(),
            (px - width / 2, py + 10),
            ("sans-serif", 15),
        ))?;
    }
    root.present()?;
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(cells: &[Cell], table: &str) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>freshpool bench</title>\n\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td.t{text-align:left}\
         img{display:block;margin:1em 0;max-width:100%}</style></head><body>\n\
         <h1>freshpool bench</h1>\n<p>Each strategy against each failure mode from the field, \
         on in-process loopback servers.</p>\n",
    );
    for chart in &CHARTS {
        let _ = writeln!(
            out,
            "<h2>{}</h2>\n<img src=\"{}\" alt=\"{}\">",
            chart.title, chart.file, chart.title
        );
    }
    out.push_str(
        "<h2>All cells</h2>\n<table><tr><th>scenario</th><th>strategy</th><th>requests</th><th>ok/s</th>\
         <th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>conns</th><th>peak</th><th>dup POST</th>\
         <th>errors</th><th>first error</th></tr>\n",
    );
    for c in cells {
        let kinds: Vec<String> = c
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td class=t>{}</td><td class=t>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=t>{} {}</td><td class=t>{}</td></tr>",
            escape(&c.scenario),
            escape(&c.strategy),
            c.requests,
            c.rps,
            Cell::latency(c.p50_ms),
            Cell::latency(c.p99_ms),
            Cell::latency(c.max_ms),
            c.connections_opened,
            c.peak_open_connections,
            c.duplicated_posts,
            c.errors,
            escape(&kinds.join(", ")),
            escape(c.first_error.as_deref().unwrap_or("")),
        );
    }
    let _ = write!(
        out,
        "</table>\n<h2>As printed</h2>\n<pre>{}</pre>\n</body></html>\n",
        escape(table)
    );
    out
}
