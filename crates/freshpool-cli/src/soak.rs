//! `freshpool soak` (not implemented yet).

/// Arguments of `freshpool soak`.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {}

/// Runs `freshpool soak`.
pub async fn run(_args: SoakArgs) -> Result<(), String> {
    Err("soak is not implemented yet".into())
}
