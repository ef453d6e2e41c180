//! `roster sandbox`: the fake vendor APIs, in the foreground, until Ctrl-C.

use clap::Args;

use super::Outcome;

#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// Show only this vendor's address and credentials (all three always run, over one
    /// generated company).
    #[arg(value_enum)]
    vendor: Option<VendorArg>,
    /// How many generated people.
    #[arg(long, default_value_t = 25)]
    people: usize,
    /// Seed for the generated company.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Brex port (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    brex_port: u16,
    /// Expensify port.
    #[arg(long, default_value_t = 0)]
    expensify_port: u16,
    /// Sage People port.
    #[arg(long, default_value_t = 0)]
    sage_port: u16,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum VendorArg {
    Brex,
    Expensify,
    Sage,
    All,
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<Outcome> {
    let only = match args.vendor {
        Some(VendorArg::Brex) => Some(roster_sandbox::Vendor::Brex),
        Some(VendorArg::Expensify) => Some(roster_sandbox::Vendor::Expensify),
        Some(VendorArg::Sage) => Some(roster_sandbox::Vendor::Sage),
        Some(VendorArg::All) | None => None,
    };
    let config = roster_sandbox::SandboxConfig { people: args.people, seed: args.seed, ..Default::default() };
    let ports = roster_sandbox::Ports { brex: args.brex_port, expensify: args.expensify_port, sage: args.sage_port };
    roster_sandbox::serve_forever(config, ports, only).await?;
    Ok(Outcome::Ok)
}
