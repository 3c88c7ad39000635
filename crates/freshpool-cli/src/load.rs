//! `freshpool load` (not implemented yet).

/// Arguments of `freshpool load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {}

/// Runs `freshpool load`.
pub async fn run(_args: LoadArgs) -> Result<(), String> {
    Err("load is not implemented yet".into())
}
