//! `freshpool`: a thin command-line layer over the freshpool library.
//!
//! - `bench`: the failure modes from the field, side by side per strategy.
//! - `load`: a load generator that shows the pool at work.
//! - `probe`: how a server treats idle connections, and settings to match.
//! - `soak`: a chaos soak that counts every request (lost = 0, duplicated = 0).

mod bench;
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
    let cli = Cli::parse();
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
            Command::Load(args) => load::run(args).await,
            Command::Probe(args) => probe::run(args).await,
            Command::Soak(args) => soak::run(args).await,
        }
    });
    if let Err(message) = result {
        eprintln!("freshpool: {message}");
        std::process::exit(1);
    }
}
