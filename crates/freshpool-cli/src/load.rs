//! `freshpool load`: a load generator (like oha or hey) that shows the pool
//! at work: latency percentiles and histogram, status codes, errors by kind,
//! and the pool's own counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Arguments of `freshpool load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Target URL (http:// or https://).
    pub url: String,
    /// Requests in flight at once.
    #[arg(short = 'c', long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Number of requests (default 200 unless -d is given).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Run for this long instead of a request count (e.g. 10s, 1m).
    #[arg(short = 'd', long, value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Extra header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    pub body: Option<String>,
    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// Per-request timeout (more than 0, at most a year).
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// A per-request `--timeout`: more than zero (a zero timeout fails every
/// request) and at most a year (the library's bound), said in the CLI's
/// words rather than the builder's.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d > Duration::from_secs(365 * 24 * 3600) {
        return Err(format!(
            "--timeout must be more than 0 and at most a year (e.g. 10s), not '{s}'"
        ));
    }
    Ok(d)
}

/// A duration that must be more than 0 (`-d`, `--serve-for`): `0s` ran
/// nothing and then reported it as a failure of the server.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "'{s}' is no time at all; give more than 0 (e.g. 10s)"
        ));
    }
    Ok(d)
}

/// `url` for output, its credentials hidden: what was typed may hold
/// them, and summaries and errors end up in logs and tickets. Of a URL
/// that parses, the authority's userinfo is hidden (a user name alone,
/// often a token, too); where `http` read a password holding `/`, `?` or
/// `#` as a host, a port and a path (`alice:pa/ss@h`, `alice:2024/x@h`),
/// everything up to that `@`. An `@` elsewhere (`/@scope/pkg`,
/// `?email=a@b.c`) is no password and stays.
pub fn shown_url(url: &str) -> String {
    // (A scheme is a scheme token before "://", not any "://": one in a
    // password or a query is not.)
    let start = url
        .split_once("://")
        .filter(|(scheme, _)| {
            let mut c = scheme.chars();
            c.next().is_some_and(|c| c.is_ascii_alphabetic())
                && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
        .map_or(0, |(scheme, _)| scheme.len() + 3);
    let hide_to = |at: usize| format!("{}***{}", &url[..start], &url[at..]);
    let Ok(uri) = url.parse::<http::Uri>() else {
        return match url[start..].rfind('@') {
            Some(at) => hide_to(start + at),
            None => url.to_owned(),
        };
    };
    let Some(authority) = uri.authority().map(|a| a.as_str()) else {
        return url.to_owned();
    };
    if let Some((userinfo, host)) = authority.rsplit_once('@') {
        let shown = match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        };
        return url.replacen(authority, &shown, 1);
    }
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, a)| a);
    let Some((_, port)) = after_host.rsplit_once(':') else {
        return url.to_owned();
    };
    let rest = &url[start..];
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        // A port that is no number: the password's start. Its '@' may be
        // past a '?' or '#' it holds.
        return match rest.rfind('@') {
            Some(at) => hide_to(start + at),
            None => url.to_owned(),
        };
    }
    // `user:` or `user:2024` read as host and port: a first path segment
    // with text before an '@' is the password's rest.
    let path = &rest[authority.len().min(rest.len())..];
    let segment = path.strip_prefix('/').unwrap_or("");
    let segment = &segment[..segment.find(['/', '?', '#']).unwrap_or(segment.len())];
    match segment.find('@').filter(|&at| at > 0) {
        Some(at) => hide_to(start + authority.len() + 1 + at),
        None => url.to_owned(),
    }
}

/// Parses `500ms`, `1.5s`, `2m` (or `2min`), `1h` or a bare number of
/// seconds: the one duration syntax of every subcommand.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}' (e.g. 500ms, 10s, 2m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit '{other}' in '{s}' (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("invalid duration '{s}'"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Reads every certificate of a PEM file.
pub fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// Checks that `url` is an absolute http(s) URL with a host.
pub fn parse_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL '{}': {e}", shown_url(url)))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "invalid URL '{}': the scheme must be http or https",
                shown_url(url)
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid URL '{}': no host", shown_url(url)));
    }
    // `http` keeps a port it cannot read as a number (`:65536`, `:8o80`)
    // and `port()` then says "none": the default port would be used. The
    // library refuses these the same way (`PoolKey::view`); an empty port
    // means the default (RFC 3986 section 3.2.3).
    let host_port = uri.authority().map_or("", |a| {
        let a = a.as_str().rsplit('@').next().unwrap_or_default();
        a.rsplit_once(']').map_or(a, |(_, after)| after)
    });
    if let Some((_, digits)) = host_port.rsplit_once(':').filter(|(_, p)| !p.is_empty()) {
        if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.parse::<u16>().is_err() {
            // (Not the port's text when the URL has an '@': with an
            // unencoded '/' in a password, `http` reads its start as the
            // port.)
            let port = if url.contains('@') {
                String::new()
            } else {
                format!(" '{digits}'")
            };
            return Err(format!(
                "invalid URL '{}': port{port} is not a number from 0 to 65535",
                shown_url(url)
            ));
        }
    }
    Ok(uri)
}

struct Tally {
    /// Latencies of answered requests, in microseconds. A histogram, not
    /// a list: a long `-d` run at loopback rates answers hundreds of
    /// millions of requests, and a list of them (16 bytes each) outgrew
    /// memory; this stays a few hundred KiB, with 3 significant digits.
    latencies: hdrhistogram::Histogram<u64>,
    /// The exact extremes (the histogram's are its buckets' edges).
    fastest: Option<Duration>,
    slowest: Duration,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, (u64, String)>,
    /// Requests still in flight when `-d` ran out: stopped there, counted
    /// neither as answered nor as failed.
    cut_off: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latencies: hdrhistogram::Histogram::new(3).expect("3 significant digits are valid"),
            fastest: None,
            slowest: Duration::ZERO,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            cut_off: 0,
        }
    }
}

impl Tally {
    /// Requests answered (any status), and those of them answered with a
    /// 4xx or 5xx status.
    fn answered_and_refused(&self) -> (u64, u64) {
        let answered = self.statuses.values().sum();
        let refused = self.statuses.range(400..).map(|(_, n)| n).sum();
        (answered, refused)
    }
}

/// How one request of the run ended.
enum Outcome {
    Answered,
    /// The error, and whether the response head had come (a body that
    /// failed or ran out of time after it).
    Failed(freshpool::Error, bool),
    /// `-d` ran out (or Ctrl-C came) while it was in flight.
    CutOff,
}

/// Ctrl-C: the run stops sending, cuts off what is in flight and still
/// prints its summary (it printed nothing, the results of a long run lost).
#[derive(Default)]
struct Stop {
    fired: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            // (Made before the check: `notify_waiters` wakes a `Notified`
            // from its creation on, so a fire between the two is seen.)
            let notified = self.notify.notified();
            if self.fired() {
                return;
            }
            notified.await;
        }
    }
}

struct Job {
    client: freshpool::Client,
    method: http::Method,
    url: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
    tally: Mutex<Tally>,
    stop: Stop,
}

impl Job {
    /// Sends one request; with a `deadline` (`-d`), stops it there.
    async fn one(&self, deadline: Option<Instant>) -> Outcome {
        let mut req = http::Request::builder()
            .method(self.method.clone())
            .uri(&self.url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(self.body.clone())
            .expect("method, URL and headers were validated");
        let started = Instant::now();
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| (e, false))?;
            let status = resp.status().as_u16();
            resp.into_body().drain().await.map_err(|e| (e, true))?;
            Ok::<u16, (freshpool::Error, bool)>(status)
        };
        let cut = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = exchange => result,
            () = cut => {
                self.tally.lock().unwrap_or_else(|p| p.into_inner()).cut_off += 1;
                return Outcome::CutOff;
            }
            () = self.stop.wait() => {
                self.tally.lock().unwrap_or_else(|p| p.into_inner()).cut_off += 1;
                return Outcome::CutOff;
            }
        };
        // (Read before the results' lock: waiting for it is no part of
        // the request.)
        let took = started.elapsed();
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(status) => {
                t.fastest = Some(t.fastest.map_or(took, |f| f.min(took)));
                t.slowest = t.slowest.max(took);
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                if t.latencies.record(micros.max(1)).is_err() {
                    t.latencies.saturating_record(micros);
                }
                *t.statuses.entry(status).or_default() += 1;
                Outcome::Answered
            }
            Err((e, headed)) => {
                let entry = t
                    .errors
                    .entry(format!("{:?}", e.kind()))
                    .or_insert((0, e.to_string()));
                entry.0 += 1;
                Outcome::Failed(e, headed)
            }
        }
    }
}

fn build_job(args: &LoadArgs) -> Result<Job, String> {
    parse_url(&args.url)?;
    let method = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid method '{}'", args.method))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("invalid header '{h}': expected 'Name: value'"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("invalid header name in '{h}'"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| format!("invalid header value in '{h}'"))?;
        headers.push((name, value));
    }
    let limit = usize::try_from(args.concurrency).unwrap_or(usize::MAX);
    let mut builder = freshpool::Client::builder()
        .max_connections_per_host(limit)
        .max_idle_per_host(limit)
        .max_connections_total(limit.max(512))
        .max_pending(limit.max(1024))
        .timeout(Some(args.timeout))
        .danger_accept_invalid_certs(args.insecure);
    if let Some(path) = &args.cacert {
        for cert in load_pem_certs(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    Ok(Job {
        client,
        method,
        url: args.url.clone(),
        headers,
        body: Bytes::from(args.body.clone().unwrap_or_default()),
        tally: Mutex::new(Tally::default()),
        stop: Stop::default(),
    })
}

/// Runs `freshpool load`.
/// `fd_limit`: the open-file limit in force (`fd_limit::raise`).
pub async fn run(args: LoadArgs, fd_limit: Option<u64>) -> Result<(), String> {
    let job = Arc::new(build_job(&args)?);
    let total = match (args.requests, args.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => 200,
    };
    // (As many connections as requests run at once: `-c`, or fewer for a
    // short run. Over HTTP/2 a few carry them all, hence a warning.)
    let connections = args.concurrency.min(total.saturating_sub(1)).max(1);
    if let Some(warning) = crate::fd_limit::warning(connections, fd_limit) {
        eprintln!("freshpool: warning: {warning}");
    }
    let deadline = args.duration.map(|d| Instant::now() + d);
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(
            if total == u64::MAX { None } else { Some(total) },
            ProgressDrawTarget::stderr(),
        )
    } else {
        ProgressBar::hidden()
    };
    let template = if total == u64::MAX {
        "{spinner} [{elapsed_precise}] {pos} requests ({per_sec})"
    } else {
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} ({per_sec}, eta {eta})"
    };
    bar.set_style(ProgressStyle::with_template(template).map_err(|e| e.to_string())?);
    let started = Instant::now();
    if total == 0 {
        return Err("-n must be at least 1".into());
    }
    let ctrl_c = {
        let job = job.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                job.stop.fire();
            }
        })
    };
    // The first request goes alone: an unreachable or misconfigured target
    // is reported as one line instead of N identical errors.
    if let Outcome::Failed(e, headed) = job.one(deadline).await {
        use freshpool::Kind;
        match e.kind() {
            Kind::Connect
            | Kind::ConnectTimeout
            | Kind::Tls
            | Kind::InvalidUri
            | Kind::Proxy
            | Kind::ProxyAuth => {
                bar.finish_and_clear();
                return Err(format!("cannot reach {}: {e}", shown_url(&args.url)));
            }
            // The request itself cannot go (a Content-Length that
            // disagrees with --body, a method the client does not send):
            // every other would fail alike, at once.
            Kind::Body | Kind::Unsupported if !e.is_possibly_processed() => {
                bar.finish_and_clear();
                return Err(format!("cannot send this request: {e}"));
            }
            // A target that takes connections and never answers: every
            // request would wait out its --timeout alike (20,000 requests
            // at 64 at a time and 10 s each: 52 minutes of one error).
            // (Not a body slower than --timeout after its head came: that
            // target answers, and the run measures it.)
            Kind::Timeout | Kind::ResponseHeaderTimeout if !headed => {
                bar.finish_and_clear();
                return Err(format!(
                    "{} did not answer the first request: {e}",
                    shown_url(&args.url)
                ));
            }
            _ => {}
        }
    }
    bar.inc(1);
    // The rate counts from here: the first request went alone.
    let loaded = Instant::now();
    let sent = Arc::new(AtomicU64::new(1));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(total.saturating_sub(1)) {
        let (job, sent, bar) = (job.clone(), sent.clone(), bar.clone());
        set.spawn(async move {
            while !job.stop.fired()
                && sent.fetch_add(1, Ordering::Relaxed) < total
                && deadline.is_none_or(|d| Instant::now() < d)
            {
                let failed = matches!(job.one(deadline).await, Outcome::Failed(..));
                bar.inc(1);
                if failed {
                    // A request refused at once does no I/O, so nothing in
                    // it yields: without this the loop held its worker
                    // until -d ran out, Ctrl-C's task included.
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    ctrl_c.abort();
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let phase = Phase {
        total,
        elapsed,
        loaded: loaded.elapsed(),
    };
    print!("{}", summary(&args, &job, phase));
    if job.stop.fired() {
        return Err(format!(
            "interrupted (Ctrl-C) after {:.1} s: the summary above covers the requests sent until then",
            elapsed.as_secs_f64()
        ));
    }
    // Scripts and CI read the exit status: a run where requests failed, or
    // were answered 4xx/5xx, is not a success.
    let t = job.tally.lock().unwrap_or_else(|p| p.into_inner());
    let (answered, refused) = t.answered_and_refused();
    let failed: u64 = t.errors.values().map(|(n, _)| n).sum();
    // (All cut off at -d: the target answered nothing in the whole run.
    // It used to exit 0, where before -d cut requests it failed on
    // --timeout.)
    if answered + failed == 0 {
        return Err(format!(
            "no request was answered within -d ({} cut off in flight)",
            t.cut_off
        ));
    }
    if failed + refused > 0 {
        return Err(format!(
            "{} of {} requests did not succeed ({refused} answered 4xx/5xx, {failed} failed)",
            failed + refused,
            answered + failed
        ));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The run's shape, for its summary.
struct Phase {
    /// Requests asked for (`u64::MAX`: until -d).
    total: u64,
    /// The whole run, the first request (alone) included.
    elapsed: Duration,
    /// Since the first request ended: the concurrent part.
    loaded: Duration,
}

fn summary(args: &LoadArgs, job: &Job, phase: Phase) -> String {
    let elapsed = phase.elapsed;
    let t = job.tally.lock().unwrap_or_else(|p| p.into_inner());
    let (answered, refused) = t.answered_and_refused();
    let ok = answered - refused;
    let errors: u64 = t.errors.values().map(|(n, _)| n).sum();
    let mut o = String::new();
    let _ = writeln!(o, "Summary:");
    let _ = writeln!(o, "  URL:          {} {}", job.method, shown_url(&args.url));
    let _ = writeln!(
        o,
        "  Requests:     {} (ok {ok}, 4xx/5xx {refused}, errors {errors})",
        answered + errors
    );
    if t.cut_off > 0 {
        let _ = writeln!(
            o,
            "  Cut off:      {} in flight when the run ended (-d ran out, or Ctrl-C; not counted above)",
            t.cut_off
        );
    }
    // (At most the request count less the first, which goes alone:
    // `-n 3 -c 50` has 2 in flight; the default of 200 requests, 199.)
    let in_flight = (phase.total.saturating_sub(1).min(args.concurrency)).max(1);
    let _ = writeln!(o, "  Concurrency:  {in_flight}");
    let _ = writeln!(o, "  Elapsed:      {:.3} s", elapsed.as_secs_f64());
    // Over the concurrent part: the first request, alone, is no part of
    // the rate (a 200 ms server, `-n 200 -c 50`: 200 req/s with it, 249
    // without).
    let done = answered + errors;
    let rate = if done > 1 && !phase.loaded.is_zero() {
        (done - 1) as f64 / phase.loaded.as_secs_f64()
    } else {
        done as f64 / elapsed.as_secs_f64().max(1e-9)
    };
    let _ = writeln!(o, "  Requests/s:   {rate:.1}");
    latency_section(&mut o, &t);
    let _ = writeln!(o, "Status codes:");
    for (code, n) in &t.statuses {
        let _ = writeln!(o, "  {code}: {n}");
    }
    let _ = writeln!(o, "Errors:");
    if t.errors.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for (kind, (n, first)) in &t.errors {
        let _ = writeln!(o, "  {kind}: {n}  (first: {first})");
    }
    pool_section(&mut o, &job.client.stats());
    o
}

fn latency_section(o: &mut String, t: &Tally) {
    let _ = writeln!(o, "Latency (answered requests, any status):");
    let lat = &t.latencies;
    let Some(fastest) = t.fastest.filter(|_| !lat.is_empty()) else {
        let _ = writeln!(o, "  no answered request");
        return;
    };
    let us_to_ms = |us: u64| us as f64 / 1000.0;
    let (lo, hi) = (ms(fastest), ms(t.slowest));
    let _ = writeln!(
        o,
        "  min {lo:.2} ms, mean {:.2} ms, max {hi:.2} ms",
        lat.mean() / 1000.0
    );
    for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)] {
        // (A bucket's middle, within the histogram's 0.1 %, never past
        // the exact extremes.)
        let at = us_to_ms(lat.median_equivalent(lat.value_at_percentile(p)));
        let _ = writeln!(o, "  {name:<6} {:.2} ms", at.clamp(lo, hi));
    }
    let _ = writeln!(o, "Histogram:");
    let buckets = 10usize;
    let width = ((hi - lo) / buckets as f64).max(1e-6);
    let mut counts = vec![0u64; buckets];
    for v in lat.iter_recorded() {
        let at = us_to_ms(lat.median_equivalent(v.value_iterated_to())).clamp(lo, hi);
        counts[(((at - lo) / width) as usize).min(buckets - 1)] += v.count_at_value();
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    for (i, n) in counts.iter().enumerate() {
        let bar = "■".repeat(((n * 40).div_ceil(most)) as usize);
        let _ = writeln!(
            o,
            "  {:>9.2} ms [{n:>7}] {bar}",
            lo + width * (i + 1) as f64
        );
    }
}

fn pool_section(o: &mut String, stats: &freshpool::PoolStats) {
    let _ = writeln!(o, "Pool:");
    let _ = writeln!(
        o,
        "  connections created {}, reused {}",
        stats.created(),
        stats.reused()
    );
    for origin in &stats.origins {
        let _ = writeln!(
            o,
            "  {} ({}): created {}, reused {}, retries {}, connect errors {}, pool timeouts {}, TLS resumed {}",
            origin.origin,
            origin.protocol,
            origin.created,
            origin.reused,
            origin.retries,
            origin.connect_errors,
            origin.pool_timeouts,
            origin.tls_resumed
        );
        let closed: Vec<String> = origin
            .closed
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", r.as_str()))
            .collect();
        let closed = if closed.is_empty() {
            "none".to_string()
        } else {
            closed.join(", ")
        };
        let _ = writeln!(o, "    closed by reason: {closed}");
        let w = origin.pool_wait;
        let _ = writeln!(
            o,
            "    pool wait: {} waits, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            w.count,
            ms(w.p50),
            ms(w.p99),
            ms(w.max)
        );
        let c = origin.connect_time;
        let _ = writeln!(
            o,
            "    connect time: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(c.p50),
            ms(c.p99),
            ms(c.max)
        );
    }
    let _ = writeln!(
        o,
        "  open connections now {}, freezes detected {}",
        stats.open_connections, stats.freezes_detected
    );
}

#[cfg(test)]
mod tests {

    /// Credentials are hidden in what the CLI prints, and only they: an
    /// '@' in a query is left alone (it read as a user), a user name alone
    /// (a token) is hidden, a password that breaks parsing never shows.
    #[test]
    fn shown_urls_hide_credentials_and_only_them() {
        for (url, shown) in [
            ("http://alice:hunter2@h:8080/p", "http://alice:***@h:8080/p"),
            ("https://ghp_token@github.com/x", "https://***@github.com/x"),
            ("http://h/?email=a@b.c", "http://h/?email=a@b.c"),
            ("http://h/", "http://h/"),
            ("http://alice:pa/ss@h/", "http://***@h/"),
            // From the review: '?' in the password, '@' in the path with
            // a numeric or empty "port", "://" in a query.
            ("http://alice:pa?ss@h/", "http://***@h/"),
            ("http://alice:2024/secret@h/", "http://***@h/"),
            ("http://alice:/secret@h/", "http://***@h/"),
            (
                "http://registry:8080/@scope/pkg",
                "http://registry:8080/@scope/pkg",
            ),
            ("http://u:p@[::1]:8080/", "http://u:***@[::1]:8080/"),
            ("alice:pw@h/?next=http://x", "***@h/?next=http://x"),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
        for url in ["http://alice:pa/ss@h/", "http://alice:hunter2@h:8o80/"] {
            let err = parse_url(url).unwrap_err();
            assert!(
                !err.contains("ss@") && !err.contains("hunter2") && !err.contains("'pa"),
                "{err}"
            );
        }
    }
    use super::*;

    #[test]
    fn durations_and_urls_parse_or_explain() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("10min"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_url("http://127.0.0.1:8080/x").is_ok());
        assert!(parse_url("ftp://example.com/")
            .unwrap_err()
            .contains("scheme"));
        assert!(parse_url("/relative").is_err());
        for bad in [
            "http://127.0.0.1:65536/",
            "http://127.0.0.1:8o80/",
            "https://h:+443/",
            "http://[::1]:99999/",
            "http://u:p@h:70000/",
        ] {
            let err = parse_url(bad).unwrap_err();
            assert!(err.contains("port"), "{bad}: {err}");
        }
        for good in [
            "http://[::1]:8080/",
            "http://u:p@h:8080/",
            "http://[::1]/",
            "http://h:/",
        ] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
    }
}
