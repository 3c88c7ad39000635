//! `freshpool bench` (not implemented yet).

/// Arguments of `freshpool bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

/// Runs `freshpool bench`.
pub async fn run(_args: BenchArgs) -> Result<(), String> {
    Err("bench is not implemented yet".into())
}
