//! `roster sandbox`: the fake vendor APIs, in the foreground, until Ctrl-C.

use clap::Args;
use roster_sandbox::{Ports, Sandbox, SandboxConfig, Vendor};

use super::{Context, Outcome};

/// Where `roster sandbox` listens unless told otherwise, so that credentials pasted from
/// its output (and a home kept by `roster demo --keep`) still work after a restart.
pub const WELL_KNOWN_PORTS: Ports = Ports { brex: 7401, expensify: 7402, sage: 7403 };

#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// Show only this vendor's address and credentials (all three always run, over one
    /// generated company).
    #[arg(value_enum)]
    vendor: Option<VendorArg>,
    /// How many generated people.
    #[arg(long, default_value_t = 25)]
    people: usize,
    /// Seed for the generated company: the same seed gives the same people.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Brex port (0 picks a free one).
    #[arg(long, default_value_t = WELL_KNOWN_PORTS.brex)]
    brex_port: u16,
    /// Expensify port (0 picks a free one).
    #[arg(long, default_value_t = WELL_KNOWN_PORTS.expensify)]
    expensify_port: u16,
    /// Sage People port (0 picks a free one).
    #[arg(long, default_value_t = WELL_KNOWN_PORTS.sage)]
    sage_port: u16,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum VendorArg {
    Brex,
    Expensify,
    Sage,
    All,
}

pub async fn run(args: SandboxArgs, cx: &Context) -> anyhow::Result<Outcome> {
    let only = match args.vendor {
        Some(VendorArg::Brex) => Some(Vendor::Brex),
        Some(VendorArg::Expensify) => Some(Vendor::Expensify),
        Some(VendorArg::Sage) => Some(Vendor::Sage),
        Some(VendorArg::All) | None => None,
    };
    // `--now` / ROSTER_NOW sets the company's "today" (start and end dates hang off it).
    let config = SandboxConfig { people: args.people, seed: args.seed, today: cx.clock.today(), ..Default::default() };
    let ports = Ports { brex: args.brex_port, expensify: args.expensify_port, sage: args.sage_port };
    let sandbox = Sandbox::start_on(config, ports).await.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nanother program (perhaps another `roster sandbox`) uses one of the ports {}, {} and {}; \
             choose others with --brex-port, --expensify-port and --sage-port (0 picks a free one)",
            args.brex_port,
            args.expensify_port,
            args.sage_port
        )
    })?;
    let c = sandbox.config();
    println!("Roster sandbox: {} people, seed {}, today {}", c.people, c.seed, c.today);
    for vendor in [Vendor::Brex, Vendor::Expensify, Vendor::Sage] {
        if only.is_none_or(|o| o == vendor) {
            let (title, address) = match vendor {
                Vendor::Brex => ("Brex", sandbox.brex_url()),
                Vendor::Expensify => ("Expensify", sandbox.expensify_url()),
                Vendor::Sage => ("Sage People", sandbox.sage_token_url()),
            };
            println!("  {title:<12} {address}");
        }
    }
    println!("\nCredentials for these servers (paste into another terminal):");
    for line in credential_lines(&sandbox, only) {
        println!("  {line}");
    }
    println!("\nAdmin (each server): GET /_sandbox/stats, PUT /_sandbox/faults, GET /_sandbox/info");
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    sandbox.shutdown().await;
    Ok(Outcome::Ok)
}

/// Ready-to-run `roster credentials add` commands for the sandbox's vendors, named as the
/// example workflows and integrations expect (`brex`, `expensify`, `sage`). The secrets
/// are the sandbox's own fixed ones, never real.
pub fn credential_lines(sandbox: &Sandbox, only: Option<Vendor>) -> Vec<String> {
    let c = sandbox.config();
    let mut lines = Vec::new();
    let shows = |v: Vendor| only.is_none_or(|o| o == v);
    if shows(Vendor::Brex) {
        lines.push(format!(
            "printf %s '{}' | roster credentials add brex --kind bearer --base-url {}",
            c.brex_token,
            sandbox.brex_url()
        ));
    }
    if shows(Vendor::Expensify) {
        lines.push(format!(
            "printf %s '{}' | roster credentials add expensify --kind expensify --username {} --base-url {}",
            c.expensify_partner_user_secret,
            c.expensify_partner_user_id,
            sandbox.expensify_url()
        ));
    }
    if shows(Vendor::Sage) {
        lines.push(format!(
            "printf %s '{}' | SAGE_PASSWORD='{}' roster credentials add sage --kind oauth2 --token-url {} \
             --client-id {} --username {} --password-env SAGE_PASSWORD",
            c.sage_client_secret,
            c.sage_password,
            sandbox.sage_token_url(),
            c.sage_client_id,
            c.sage_username
        ));
    }
    lines
}
