//! The bench table and the findings printed under it.

use std::fmt::Write;

use super::cell::Cell;

fn errors_text(c: &Cell) -> String {
    if c.errors == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = c
        .errors_by_kind
        .iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect();
    format!("{} ({})", c.errors, kinds.join(","))
}

/// The table: one row per cell.
pub fn render(cells: &[Cell]) -> String {
    let header = [
        "scenario", "strategy", "requests", "ok/s", "p50 ms", "p99 ms", "max ms", "conns", "peak",
        "dup POST", "errors",
    ];
    let rows: Vec<[String; 11]> = cells
        .iter()
        .map(|c| {
            [
                c.scenario.clone(),
                c.strategy.clone(),
                c.requests.to_string(),
                format!("{:.0}", c.rps),
                Cell::latency(c.p50_ms),
                Cell::latency(c.p99_ms),
                Cell::latency(c.max_ms),
                c.connections_opened.to_string(),
                c.peak_open_connections.to_string(),
                c.duplicated_posts.to_string(),
                errors_text(c),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, v) in widths.iter_mut().zip(row) {
            *w = (*w).max(v.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, vals: Vec<&str>| {
        let mut s = String::new();
        for (i, (v, w)) in vals.iter().zip(&widths).enumerate() {
            // Text columns left-aligned, numbers right-aligned.
            if i < 2 || i == 10 {
                let _ = write!(s, "{v:<w$}  ");
            } else {
                let _ = write!(s, "{v:>w$}  ");
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&mut out, header.to_vec());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, rule.iter().map(String::as_str).collect());
    let mut last = "";
    for (row, cell) in rows.iter().zip(cells) {
        if !last.is_empty() && last != cell.scenario {
            out.push('\n');
        }
        last = &cell.scenario;
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

fn find<'a>(cells: &'a [Cell], scenario: &str, strategy: &str) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.scenario == scenario && c.strategy == strategy)
}

/// The cell, if it finished: the stand-in of one that did not (`Unfinished`)
/// holds no figures, and its zeros read as measured ones ("0 connections",
/// "bounded: OK").
fn measured<'a>(cells: &'a [Cell], scenario: &str, strategy: &str) -> Option<&'a Cell> {
    find(cells, scenario, strategy).filter(|c| !c.errors_by_kind.contains_key("Unfinished"))
}

/// What the table shows, in sentences: the cost of not pooling, who
/// failed where, and the first error message of every failing cell.
pub fn findings(cells: &[Cell]) -> String {
    let mut out = String::from("findings:\n");
    for scenario in ["burst", "throughput"] {
        let Some(fp) = measured(cells, scenario, "freshpool") else {
            continue;
        };
        for other in ["per-request", "no-pool"] {
            if let Some(o) = measured(cells, scenario, other) {
                let _ = writeln!(
                    out,
                    "  {scenario}: {other} opened {} connections for {} requests (freshpool: {}); \
                     {:.0} ok/s vs {:.0}, p99 {} ms vs {}",
                    o.connections_opened,
                    o.requests,
                    fp.connections_opened,
                    o.rps,
                    fp.rps,
                    Cell::latency(o.p99_ms),
                    Cell::latency(fp.p99_ms)
                );
            }
        }
    }
    if let Some(u) = cells
        .iter()
        .filter(|c| c.scenario == "unbounded")
        .max_by_key(|c| c.peak_open_connections)
    {
        // (Without freshpool's cell, a run stopped early, no figure: "0"
        // read as a measured peak. Likewise the stand-in of a cell that
        // did not finish: its 0 read as bounded, "OK".)
        let fp = measured(cells, "unbounded", "freshpool").map_or_else(
            || "not measured".to_owned(),
            |c| {
                if c.peak_open_connections <= UNBOUNDED_PER_HOST {
                    format!(
                        "{}, bounded per host ({UNBOUNDED_PER_HOST}): OK",
                        c.peak_open_connections
                    )
                } else {
                    format!(
                        "{}, NOT bounded by its per-host limit ({UNBOUNDED_PER_HOST}): FAILED",
                        c.peak_open_connections
                    )
                }
            },
        );
        let _ = writeln!(
            out,
            "  unbounded: {} peaked at {} open connections (freshpool: {fp})",
            u.strategy, u.peak_open_connections
        );
    }
    for c in cells.iter().filter(|c| c.duplicated_posts > 0) {
        let _ = writeln!(
            out,
            "  {}/{}: {} POSTs processed twice",
            c.scenario, c.strategy, c.duplicated_posts
        );
    }
    for c in cells.iter().filter(|c| c.errors > 0) {
        let msg = c.first_error.as_deref().unwrap_or("");
        let _ = writeln!(out, "  {}/{} first error: {msg}", c.scenario, c.strategy);
    }
    for (scenario, fp) in verdict_cells(cells) {
        let verdict = match verdict_failure(scenario, fp) {
            None => "OK",
            Some(_) if fp.faults_hit == Some(0) && fp.errors == 0 && fp.duplicated_posts == 0 => {
                "NOT TESTED (FAILED)"
            }
            Some(_) => "FAILED",
        };
        // (`None`: a report written before the cut connections were counted.)
        let hits = fp.faults_hit.map_or_else(String::new, |n| {
            format!(", {n} connections cut by the fault")
        });
        let _ = writeln!(
            out,
            "  {scenario}: freshpool {} errors, {} duplicated POSTs{hits}: {verdict}",
            fp.errors, fp.duplicated_posts
        );
    }
    out
}

/// Why freshpool's cell in a fault scenario fails its verdict, if it does:
/// an error or a duplicated POST, or a fault that cut no connection (no
/// errors then proves nothing: the run did not test what it claims).
fn verdict_failure(scenario: &str, fp: &Cell) -> Option<String> {
    if fp.errors > 0 || fp.duplicated_posts > 0 {
        Some(format!(
            "{scenario}: {} errors, {} duplicated POSTs",
            fp.errors, fp.duplicated_posts
        ))
    } else if fp.faults_hit == Some(0) {
        Some(format!(
            "{scenario}: the fault cut no connection freshpool held, so the run tested nothing"
        ))
    } else {
        None
    }
}

/// The scenarios freshpool must come through without an error or a
/// duplicated POST, and its cell in each that ran.
fn verdict_cells(cells: &[Cell]) -> impl Iterator<Item = (&'static str, &Cell)> {
    ["stale-fin", "freeze"]
        .into_iter()
        .filter_map(|scenario| Some((scenario, find(cells, scenario, "freshpool")?)))
}

/// The verdicts `findings` prints as FAILED, one line each.
pub fn failed_verdicts(cells: &[Cell]) -> Vec<String> {
    let mut failed: Vec<String> = verdict_cells(cells)
        .filter_map(|(scenario, fp)| verdict_failure(scenario, fp))
        .collect();
    if let Some(fp) = find(cells, "unbounded", "freshpool") {
        if fp.peak_open_connections > UNBOUNDED_PER_HOST {
            failed.push(format!(
                "unbounded: freshpool peaked at {} open connections, over its per-host limit ({UNBOUNDED_PER_HOST})",
                fp.peak_open_connections
            ));
        }
    }
    failed
}

/// freshpool's per-host limit in the `unbounded` scenario, which leaves
/// the library's default in place (`max_connections_per_host`, 64): its
/// peak above it is a failed verdict, not a figure.
const UNBOUNDED_PER_HOST: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(scenario: &str, strategy: &str, errors: u64) -> Cell {
        Cell {
            scenario: scenario.into(),
            strategy: strategy.into(),
            errors,
            ..Cell::default()
        }
    }

    /// freshpool's peak in `unbounded` is checked against its per-host
    /// limit: it printed "bounded per host" whatever it was.
    #[test]
    fn an_unbounded_freshpool_fails_the_run() {
        let mut fp = cell("unbounded", "freshpool", 0);
        fp.peak_open_connections = 64;
        assert!(failed_verdicts(std::slice::from_ref(&fp)).is_empty());
        assert!(findings(std::slice::from_ref(&fp)).contains("bounded per host (64): OK"));
        fp.peak_open_connections = 300;
        assert_eq!(failed_verdicts(std::slice::from_ref(&fp)).len(), 1);
        assert!(findings(std::slice::from_ref(&fp)).contains("NOT bounded"));
    }

    /// What the findings print as FAILED is what makes `bench` exit
    /// non-zero; other strategies' errors are findings, not failures.
    #[test]
    fn only_freshpools_own_verdicts_fail_the_run() {
        let mut cells = vec![
            cell("stale-fin", "freshpool", 0),
            cell("stale-fin", "no-pool", 7),
            cell("freeze", "freshpool", 0),
        ];
        assert!(failed_verdicts(&cells).is_empty());
        assert!(findings(&cells).contains("freeze: freshpool 0 errors, 0 duplicated POSTs: OK"));
        cells[2].errors = 3;
        assert_eq!(
            failed_verdicts(&cells),
            ["freeze: 3 errors, 0 duplicated POSTs"]
        );
        assert!(findings(&cells).contains("FAILED"));
    }

    /// A fault that cut no connection fails the verdict: "0 errors: OK"
    /// was printed for a run in which nothing was tested; the cut
    /// connections are shown beside it.
    #[test]
    fn a_fault_that_cut_nothing_fails_the_verdict() {
        let mut fp = cell("stale-fin", "freshpool", 0);
        fp.faults_hit = Some(0);
        assert_eq!(
            failed_verdicts(std::slice::from_ref(&fp)),
            ["stale-fin: the fault cut no connection freshpool held, so the run tested nothing"]
        );
        let text = findings(std::slice::from_ref(&fp));
        assert!(
            text.contains("0 connections cut by the fault: NOT TESTED (FAILED)"),
            "{text}"
        );
        // (A duplicated POST is the failure, whatever the fault cut.)
        fp.duplicated_posts = 1;
        let text = findings(std::slice::from_ref(&fp));
        assert!(
            text.contains("0 connections cut by the fault: FAILED"),
            "{text}"
        );
        fp.duplicated_posts = 0;
        fp.faults_hit = Some(12);
        assert!(failed_verdicts(std::slice::from_ref(&fp)).is_empty());
        let text = findings(std::slice::from_ref(&fp));
        assert!(
            text.contains("stale-fin: freshpool 0 errors, 0 duplicated POSTs, 12 connections cut by the fault: OK"),
            "{text}"
        );
    }

    /// Without freshpool's own cell (a run stopped early) the unbounded
    /// line says so: it printed "freshpool: 0", read as a measured peak.
    #[test]
    fn an_unmeasured_freshpool_peak_is_not_shown_as_zero() {
        let mut reqwest = cell("unbounded", "reqwest", 0);
        reqwest.peak_open_connections = 120;
        let text = findings(&[reqwest.clone()]);
        assert!(text.contains("(freshpool: not measured)"), "{text}");
        // Nor the stand-in of a cell that did not finish (it read "0,
        // bounded per host (64): OK").
        let mut unfinished = cell("unbounded", "freshpool", 0);
        unfinished.errors_by_kind.insert("Unfinished".to_owned(), 1);
        let text = findings(&[reqwest.clone(), unfinished]);
        assert!(text.contains("(freshpool: not measured)"), "{text}");
        let mut fp = cell("unbounded", "freshpool", 0);
        fp.peak_open_connections = 64;
        let text = findings(&[reqwest, fp]);
        assert!(
            text.contains("(freshpool: 64, bounded per host (64): OK)"),
            "{text}"
        );
    }
}
