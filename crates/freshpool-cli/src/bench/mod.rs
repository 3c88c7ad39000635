//! `freshpool bench`: the failure modes from the field, side by side per
//! client strategy, against in-process loopback servers (no setup needed).
//!
//! Also `freshpool bench --serve`: the same servers standalone, for peer
//! clients in other languages.

mod cell;
mod driver;
mod scenarios;
mod serve;
mod table;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshpool_testkit::TestCa;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use cell::Cell;
pub use driver::Strategy;
pub use scenarios::Scenario;

/// Arguments of `freshpool bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run (default: all). Repeat the flag or separate with commas.
    #[arg(long = "scenario", value_enum, value_delimiter = ',', num_args = 1..)]
    pub scenarios: Vec<Scenario>,
    /// Write every cell as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write SVG charts and an index.html to this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Fewer requests and waves (finishes in under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Start the scenario servers standalone and serve until killed.
    #[arg(long, conflicts_with_all = ["scenarios", "json", "report", "quick"])]
    pub serve: bool,
    /// With --serve: stop after this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", requires = "serve", value_parser = crate::load::parse_positive_duration)]
    pub serve_for: Option<Duration>,
    /// Internal (tests): each cell's time limit instead of 30 s (--quick)
    /// or 120 s.
    #[arg(long, hide = true, value_parser = crate::load::parse_duration)]
    pub cell_limit: Option<Duration>,
}

/// The JSON document written by `--json`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct BenchReport {
    /// `--quick` was given.
    pub quick: bool,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
    /// One entry per (scenario, strategy).
    pub cells: Vec<Cell>,
}

/// Runs `freshpool bench`.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    if let Ok(filter) = std::env::var("FRESHPOOL_LOG") {
        // e.g. FRESHPOOL_LOG=freshpool=debug: the library's tracing on stderr.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    if args.serve {
        return serve::serve(args.serve_for).await;
    }
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        each_once(&args.scenarios)
    };
    let started = Instant::now();
    let ctx = scenarios::Ctx {
        quick: args.quick,
        ca: Arc::new(TestCa::new()),
        cell_limit: args.cell_limit,
    };
    let total = (scenarios.len() * Strategy::ALL.len()) as u64;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .map_err(|e| e.to_string())?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut cells = Vec::new();
    // A cell that could not run to the end (past its time limit, a server
    // that would not start) is shown as a failed cell and ends the run,
    // the finished cells kept (one slow cell threw away every finished one:
    // no table, no JSON). The run stops there: what such a cell left
    // running (the freeze scenario's own thread, which simulates process
    // freezes) would skew the cells after it.
    let mut unfinished = Vec::new();
    'cells: for (turn, scenario) in scenarios.iter().enumerate() {
        // The strategies take turns going first, scenario by scenario: in
        // one fixed order freshpool always ran last, on the warmest CPU,
        // allocator and threads. (Shown in the fixed order below.)
        for k in 0..Strategy::ALL.len() {
            let strategy = Strategy::ALL[(k + turn) % Strategy::ALL.len()];
            bar.set_message(format!("{} / {}", scenario.name(), strategy.name()));
            let started = Instant::now();
            let cell = scenarios::run_cell(*scenario, strategy, &ctx).await;
            bar.inc(1);
            match cell {
                Ok(cell) => cells.push(cell),
                Err(e) => {
                    cells.push(Cell {
                        scenario: scenario.name().into(),
                        strategy: strategy.name().into(),
                        elapsed_s: started.elapsed().as_secs_f64(),
                        // (An error, so the table, the findings and the
                        // verdicts show it failed.)
                        requests: 1,
                        errors: 1,
                        errors_by_kind: [("Unfinished".to_owned(), 1)].into(),
                        first_error: Some(e.clone()),
                        ..Cell::default()
                    });
                    unfinished.push(e);
                    break 'cells;
                }
            }
        }
    }
    bar.finish_and_clear();
    // (Stable: the scenarios stay in their run order, the strategies each
    // in `Strategy::ALL`'s.)
    let rank = |name: &str| Strategy::ALL.iter().position(|s| s.name() == name);
    cells.sort_by_key(|c| {
        (
            scenarios.iter().position(|s| s.name() == c.scenario),
            rank(&c.strategy),
        )
    });
    let elapsed = started.elapsed();
    let doc = BenchReport {
        quick: args.quick,
        elapsed_s: elapsed.as_secs_f64(),
        cells,
    };
    // The files first: output piped into a reader that stops early (`|
    // head`) ends the process at the next print (see `main`), and they
    // were lost with it.
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let index = match &args.report {
        Some(dir) => Some(crate::report::write(
            dir,
            &doc.cells,
            &table::render(&doc.cells),
        )?),
        None => None,
    };
    let cells = &doc.cells;
    println!("{}", table::render(cells));
    println!("{}", table::findings(cells));
    println!("finished in {:.1} s", elapsed.as_secs_f64());
    if let Some(path) = &args.json {
        println!("JSON: {}", path.display());
    }
    if let Some(index) = index {
        println!("report: {}", index.display());
    }
    // The verdicts the findings print ("FAILED") decide the exit status
    // too: CI and scripts read that, not the table.
    if !unfinished.is_empty() {
        let total = scenarios.len() * Strategy::ALL.len();
        return Err(format!(
            "cells that did not finish: {} (the run stopped there: {} of {total} cells ran)",
            unfinished.join("; "),
            doc.cells.len()
        ));
    }
    match table::failed_verdicts(&doc.cells) {
        failed if failed.is_empty() => Ok(()),
        failed => Err(format!("freshpool failed: {}", failed.join("; "))),
    }
}

/// Each scenario once, in the order first named (`Vec::dedup` drops only
/// adjacent repeats: `burst,freeze,burst` ran burst twice, and the report
/// showed one run's cells).
fn each_once(named: &[Scenario]) -> Vec<Scenario> {
    let mut out: Vec<Scenario> = Vec::with_capacity(named.len());
    for s in named {
        if !out.contains(s) {
            out.push(*s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_named_twice_runs_once() {
        let named = [Scenario::ALL[0], Scenario::ALL[1], Scenario::ALL[0]];
        assert_eq!(each_once(&named), [Scenario::ALL[0], Scenario::ALL[1]]);
    }
}
