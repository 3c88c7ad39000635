//! `freshpool`: a thin command-line layer over the freshpool library.
//!
//! - `bench`: the failure modes from the field, side by side per strategy.
//! - `load`: a load generator that shows the pool at work.
//! - `probe`: how a server treats idle connections, and settings to match.
//! - `soak`: a chaos soak that counts every request (lost = 0, duplicated = 0).

mod bench;
mod fd_limit;
mod load;
mod probe;
mod report;
mod soak;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "freshpool",
    version,
    about = "HTTP connection pool bench, load generator and server probe"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the failure-mode scenarios against in-process loopback servers.
    Bench(bench::BenchArgs),
    /// Generate load against a URL and report latency, errors and pool stats.
    Load(load::LoadArgs),
    /// Probe a server's connection handling and recommend pool settings.
    Probe(probe::ProbeArgs),
    /// Chaos soak through the fault-injecting proxy; counts lost/duplicated requests.
    Soak(soak::SoakArgs),
}

fn main() {
    exit_quietly_on_a_closed_stdout();
    let cli = Cli::parse();
    // Before the runtime: its worker threads inherit nothing here, but the
    // limit is the process's, read by `load` below.
    let fd_limit = fd_limit::raise();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("freshpool: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Bench(args) => bench::run(args).await,
            Command::Load(args) => load::run(args, fd_limit).await,
            Command::Probe(args) => probe::run(args).await,
            Command::Soak(args) => soak::run(args).await,
        }
    });
    if let Err(message) = result {
        eprintln!("freshpool: {message}");
        std::process::exit(1);
    }
}

/// Output piped into a reader that stopped early (`freshpool bench | head
/// -3`): `print!` panics on the closed pipe, because Rust ignores SIGPIPE,
/// the signal that ends other Unix tools quietly there. (Restoring SIGPIPE
/// would also end the process at a write to a socket its peer reset:
/// `writev` takes no `MSG_NOSIGNAL`.) Such a panic ends the process here,
/// without its message, with the status a SIGPIPE gives (128 + 13).
fn exit_quietly_on_a_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        // (std's words: "failed printing to stdout: Broken pipe (os error 32)".)
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}
