//! `roster credentials add|list|remove`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

use clap::{Args, Subcommand};
use roster_engine::credentials::{self, NewCredential};

use super::{Context, Outcome, output};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Add or replace a credential. The secret comes from stdin or --secret-env, never argv.
    Add(Box<AddArgs>),
    /// List credentials (never shows secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a credential.
    Remove { name: String },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Name workflows refer to (`"credential": "brex"`).
    name: String,
    /// bearer, api-key, basic, expensify or oauth2.
    #[arg(long)]
    kind: String,
    /// Where relative request URLs go, e.g. https://api.brex.com.
    #[arg(long, default_value = "")]
    base_url: String,
    /// Header name for api-key credentials.
    #[arg(long)]
    header: Option<String>,
    /// Username (basic), partnerUserID (expensify), or username for the OAuth2 password grant.
    #[arg(long)]
    username: Option<String>,
    /// OAuth2 token endpoint.
    #[arg(long)]
    token_url: Option<String>,
    /// OAuth2 client id.
    #[arg(long)]
    client_id: Option<String>,
    /// Read the secret from this environment variable instead of stdin.
    #[arg(long)]
    secret_env: Option<String>,
    /// OAuth2 password grant: read the password from this environment variable.
    #[arg(long)]
    password_env: Option<String>,
    /// Requests allowed per period, shared by every run using this credential, e.g.
    /// 1000/60s (default: the vendor's documented limit when known).
    #[arg(long)]
    rate_limit: Option<String>,
    /// Request timeout, e.g. 30s.
    #[arg(long)]
    timeout: Option<String>,
}

pub async fn run(command: Command, cx: &Context) -> anyhow::Result<Outcome> {
    let store = cx.home.open_store()?;
    match command {
        Command::Add(a) => {
            let vault = cx.home.vault()?;
            let mut secrets = BTreeMap::new();
            secrets.insert("secret".to_string(), read_secret(&a.name, a.secret_env.as_deref())?);
            if let Some(var) = &a.password_env {
                let pw = std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))?;
                secrets.insert("password".to_string(), pw);
            }
            let mut settings = BTreeMap::new();
            for (k, v) in [
                ("header", &a.header),
                ("username", &a.username),
                ("token_url", &a.token_url),
                ("client_id", &a.client_id),
            ] {
                if let Some(v) = v {
                    settings.insert(k.to_string(), v.clone());
                }
            }
            let now = roster_engine::clock::rfc3339(cx.clock.now());
            let stored = credentials::seal(
                &vault,
                NewCredential { name: a.name.clone(), kind: a.kind, base_url: a.base_url, settings, secrets },
                &now,
            )?;
            store.put_credential(&stored)?;
            println!(
                "credential `{}` saved ({}, {})",
                stored.name,
                stored.kind,
                if stored.base_url.is_empty() { "no base URL" } else { &stored.base_url }
            );
            Ok(Outcome::Ok)
        }
        Command::List { json } => {
            let list = store.credentials()?;
            if json {
                let out: Vec<_> = list
                    .iter()
                    .map(|c| serde_json::json!({"name": c.name, "kind": c.kind, "base_url": c.base_url, "settings": c.settings, "created_at": c.created_at}))
                    .collect();
                output::json(&out)?;
            } else if list.is_empty() {
                println!("no credentials yet: `roster credentials add NAME --kind bearer --base-url URL`");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        let settings = c.settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
                        vec![c.name.clone(), c.kind.clone(), c.base_url.clone(), settings]
                    })
                    .collect();
                output::table(&["NAME", "KIND", "BASE URL", "SETTINGS"], &rows);
            }
            Ok(Outcome::Ok)
        }
        Command::Remove { name } => {
            if store.delete_credential(&name)? {
                println!("credential `{name}` removed");
                Ok(Outcome::Ok)
            } else {
                anyhow::bail!("no credential named `{name}`")
            }
        }
    }
}

/// The secret from `--secret-env VAR`, or stdin (one line when typed, all of it when piped).
fn read_secret(name: &str, env: Option<&str>) -> anyhow::Result<String> {
    if let Some(var) = env {
        return std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"));
    }
    let stdin = std::io::stdin();
    let mut text = String::new();
    if stdin.is_terminal() {
        eprint!("secret for `{name}` (input is visible; prefer piping it or --secret-env): ");
        stdin.read_line(&mut text)?;
    } else {
        stdin.lock().read_to_string(&mut text)?;
    }
    let secret = text.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        anyhow::bail!(
            "no secret on stdin: pipe it in (`printf %s \"$TOKEN\" | roster credentials add ...`) or use --secret-env VAR"
        );
    }
    Ok(secret)
}
