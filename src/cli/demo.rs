//! `roster demo`: the whole product in one command, against the sandbox, in a fresh
//! temporary home. Syncs Sage People, Brex and Expensify, then lets the scheduler run
//! onboarding and offboarding for a simulated "today" and shows what happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use roster_engine::clock::Clock;
use roster_engine::credentials::{self, NewCredential};
use roster_engine::home::Home;
use roster_engine::model::{CredentialKind, RunState};
use roster_engine::run::Engine;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::RunFilter;
use roster_sandbox::{Sandbox, SandboxConfig};

use super::{Context, Outcome, output};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the demo's home folder and print where it is.
    #[arg(long)]
    keep: bool,
    /// How many people the generated company has.
    #[arg(long, default_value_t = 30)]
    people: usize,
    /// The simulated "today" (default: the date of `--now`, or today).
    #[arg(long)]
    today: Option<jiff::civil::Date>,
}

const WORKFLOWS: &[(&str, &str)] = &[
    ("onboarding.json", include_str!("../../examples/onboarding.json")),
    ("offboarding.json", include_str!("../../examples/offboarding.json")),
    ("on-leave-change.json", include_str!("../../examples/on-leave-change.json")),
];

const INTEGRATIONS: &[(&str, &str)] = &[
    ("sage-people.json", include_str!("../../examples/integrations/sage-people.json")),
    ("brex.json", include_str!("../../examples/integrations/brex.json")),
    ("expensify.json", include_str!("../../examples/integrations/expensify.json")),
];

pub async fn run(args: DemoArgs, cx: &Context) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let today = args.today.unwrap_or_else(|| cx.clock.today());
    let dir = tempfile::Builder::new().prefix("roster-demo-").tempdir()?;
    let home = Home::new(dir.path());
    let store = home.init().await?.store;

    println!("Roster demo: a generated company of {} people, today is {today}\n", args.people);
    let config = SandboxConfig { people: args.people, today, ..Default::default() };
    // A kept home's credentials point at the sandbox: on its well-known ports, `roster
    // sandbox` can bring the same vendors back later. Otherwise any free ports will do.
    let sandbox = match args.keep {
        true => match Sandbox::start_on(config.clone(), super::sandbox::WELL_KNOWN_PORTS).await {
            Ok(s) => s,
            Err(_) => Sandbox::start(config).await?,
        },
        false => Sandbox::start(config).await?,
    };
    let c = sandbox.config().clone();
    println!(
        "1. Sandbox APIs on loopback: Brex {}, Expensify {}, Sage People {}",
        sandbox.brex_url(),
        sandbox.expensify_url(),
        sandbox.sage_token_url()
    );

    // Credentials, sealed in the vault like real ones.
    let vault = home.vault()?;
    let now = roster_engine::clock::rfc3339(cx.clock.now());
    let add = |name: &str,
               kind: CredentialKind,
               base: String,
               settings: &[(&str, String)],
               secrets: &[(&str, &str)]|
     -> NewCredential {
        NewCredential {
            name: name.into(),
            kind,
            base_url: base,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            secrets: secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    };
    let brex = add("brex", CredentialKind::Bearer, sandbox.brex_url(), &[], &[("secret", &c.brex_token)]);
    let expensify = add(
        "expensify",
        CredentialKind::Expensify,
        sandbox.expensify_url(),
        &[("username", c.expensify_partner_user_id.clone())],
        &[("secret", &c.expensify_partner_user_secret)],
    );
    let sage = add(
        "sage",
        CredentialKind::OAuth2,
        String::new(),
        &[
            ("token_url", sandbox.sage_token_url()),
            ("client_id", c.sage_client_id.clone()),
            ("username", c.sage_username.clone()),
        ],
        &[("secret", &c.sage_client_secret), ("password", &c.sage_password)],
    );
    for new in [brex, expensify, sage] {
        store.credentials.put_credential(&credentials::seal(&vault, new, &now)?).await?;
    }
    println!("2. Credentials brex, expensify and sage saved (encrypted) in {}", home.dir.display());

    for (name, text) in WORKFLOWS {
        std::fs::write(home.workflows_dir().join(name), text)?;
    }
    for (name, text) in INTEGRATIONS {
        std::fs::write(home.integrations_dir().join(name), text)?;
    }
    // The scheduler's day: 09:00 UTC on the simulated today, when onboarding fires.
    let clock = Clock::fixed(today.at(9, 0, 0, 0).to_zoned(jiff::tz::TimeZone::UTC)?.timestamp());
    let engine = Arc::new(Engine::new(store.clone(), Some(vault), clock));
    let creds = super::workflows::known_credentials(Some(&store)).await;
    let catalog = Catalog::load(&home.workflows_dir(), &home.integrations_dir(), &cx.presets()?, creds.as_ref())?;
    let service = Service::new(engine.clone(), catalog, cx.presets()?);

    println!("3. Syncing people (Sage People is the HR source of truth, then Brex and Expensify by email):");
    for name in ["sage-people", "brex", "expensify"] {
        let integration = service.catalog().integrations[name].clone();
        let s = service.sync(&integration).await?;
        println!(
            "   {:<12} {} fetched, {} created, {} updated, {} skipped, {} failed{}",
            name,
            s.counts.fetched,
            s.counts.created,
            s.counts.updated,
            s.counts.skipped,
            s.counts.failed,
            s.error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    service.dispatch_events().await?;

    println!("4. The scheduler fires the daily workflows for {today} 09:00 UTC:");
    for fired in service.fire_schedules().await? {
        println!("   {:<12} {} run(s) queued", fired.workflow, fired.queued);
    }
    service.work(4, true).await?;

    let runs = store.runs.runs(&RunFilter::default()).await?;
    let mut rows = Vec::new();
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for run in runs.iter().rev() {
        *states.entry(run.state.as_str()).or_default() += 1;
        let record = store.records.record(run.record_id).await?;
        let field = |k: &str| record.as_ref().map(|r| output::cell(r.fields.get(k), 12)).unwrap_or_default();
        rows.push(vec![
            run.record_label.clone(),
            field("start_date"),
            field("end_date"),
            run.workflow.clone(),
            run.state.as_str().to_string(),
            summary(&store.runs.journal(run.id).await?, run.state, run.error.as_deref()),
        ]);
    }
    println!("\n5. What happened:\n");
    output::table(&["PERSON", "START", "END", "WORKFLOW", "RESULT", "ACTIONS"], &rows);
    let stats = serde_json::to_value(sandbox.stats())?;
    let effects = &stats["side_effects"];
    println!(
        "\nBrex saw: {} user(s) invited, {} card(s) created, {} card(s) terminated, {} user update(s); {} duplicate side effects.",
        effects["users_invited"],
        effects["cards_created"],
        effects["cards_terminated"],
        effects["users_updated"],
        stats["duplicate_side_effects"]
    );
    let states_line: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("{} run(s): {} — in {:.1} s.", runs.len(), states_line.join(", "), started.elapsed().as_secs_f64());

    let sandbox_urls = [sandbox.brex_url(), sandbox.expensify_url(), sandbox.sage_token_url()];
    sandbox.shutdown().await;
    drop(service);
    drop(engine);
    drop(store);
    if args.keep {
        let kept = dir.keep();
        println!("\nThe demo's home is kept in {}. Look deeper with:", kept.display());
        println!("  roster --home {} runs list", kept.display());
        println!("  roster --home {} runs show RUN_ID", kept.display());
        println!("  roster --home {} records list --fields email,start_date,end_date,brex_status", kept.display());
        println!("  roster --home {} sync sessions", kept.display());
        let ports = super::sandbox::WELL_KNOWN_PORTS;
        if sandbox_urls
            .iter()
            .all(|u| [ports.brex, ports.expensify, ports.sage].iter().any(|p| u.contains(&format!(":{p}"))))
        {
            println!(
                "Its credentials point at the sandbox, which stopped with the demo. To run workflows against it again, \
                 start `roster sandbox --people {} --now {today}` in another terminal (a fresh company: what the demo \
                 did in Brex is gone, so runs may meet users the records know and the sandbox does not).",
                args.people
            );
        } else {
            println!(
                "Its credentials point at sandbox ports chosen at random (7401-7403 were busy), which will not \
                 answer again; add the credentials `roster sandbox` prints to use this home with a new sandbox."
            );
        }
    } else {
        println!(
            "\nRun `roster demo --keep` to keep the home and look deeper with `roster runs list` and `roster runs show RUN_ID`."
        );
    }
    let failed = states.get("failed").copied().unwrap_or(0);
    Ok(if failed == 0 { Outcome::Ok } else { Outcome::Failed })
}

/// One line on what a run did, from its journal.
fn summary(journal: &[roster_engine::model::JournalEntry], state: RunState, error: Option<&str>) -> String {
    // In the order things happened, each with how many times.
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for e in journal.iter().filter(|e| e.error.is_none() && e.kind == "api") {
        if let Some(r) = &e.request {
            let what = if r.url.ends_with("/terminate") {
                "card terminated"
            } else if r.url.ends_with("/lock") {
                "card locked"
            } else if r.method == "POST" && r.url.ends_with("/v2/cards") {
                "card created"
            } else if r.method == "POST" && r.url.ends_with("/v2/users") {
                "invited to Brex"
            } else if r.method == "PUT" {
                "Brex user updated"
            } else {
                continue;
            };
            match counts.iter_mut().find(|(w, _)| *w == what) {
                Some((_, n)) => *n += 1,
                None => counts.push((what, 1)),
            }
        }
    }
    let mut parts: Vec<String> =
        counts.into_iter().map(|(w, n)| if n > 1 { format!("{n}× {w}") } else { w.to_string() }).collect();
    if state != RunState::Succeeded {
        parts.push(error.unwrap_or(state.as_str()).to_string());
    }
    parts.join(", ")
}
