//! `roster sandbox`: the fake vendor APIs, in the foreground, until Ctrl-C.

use clap::Args;

use super::Outcome;

#[derive(Args, Debug)]
pub struct SandboxArgs {
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

pub async fn run(args: SandboxArgs) -> anyhow::Result<Outcome> {
    let config = roster_sandbox::SandboxConfig { people: args.people, seed: args.seed, ..Default::default() };
    let ports = roster_sandbox::Ports { brex: args.brex_port, expensify: args.expensify_port, sage: args.sage_port };
    roster_sandbox::serve_forever(config, ports).await?;
    Ok(Outcome::Ok)
}
