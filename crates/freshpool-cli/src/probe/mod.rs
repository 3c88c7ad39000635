//! `freshpool probe` (not implemented yet).

/// Arguments of `freshpool probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {}

/// Runs `freshpool probe`.
pub async fn run(_args: ProbeArgs) -> Result<(), String> {
    Err("probe is not implemented yet".into())
}
