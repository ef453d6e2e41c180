//! `roster credentials add|list|update|remove`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

use clap::{Args, Subcommand};
use roster_engine::credentials::{self, CredentialUpdate, NewCredential};

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
    /// Change a credential's base URL, rate limit, timeout or settings, or rotate its
    /// secret, keeping everything not named.
    Update(Box<UpdateArgs>),
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
    /// Request timeout, e.g. 30s (default 30s, at most 10m).
    #[arg(long)]
    timeout: Option<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The credential to change.
    name: String,
    /// Where relative request URLs go, e.g. https://api.brex.com.
    #[arg(long)]
    base_url: Option<String>,
    /// Requests allowed per period, e.g. 1000/60s.
    #[arg(long)]
    rate_limit: Option<String>,
    /// Request timeout, e.g. 30s (at most 10m).
    #[arg(long)]
    timeout: Option<String>,
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
    /// Rotate the secret: read the new one from this environment variable.
    #[arg(long, conflicts_with = "secret_stdin")]
    secret_env: Option<String>,
    /// Rotate the secret: read the new one from stdin.
    #[arg(long)]
    secret_stdin: bool,
    /// OAuth2 password grant: read a new password from this environment variable.
    #[arg(long)]
    password_env: Option<String>,
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
            let settings = settings([
                ("header", &a.header),
                ("username", &a.username),
                ("token_url", &a.token_url),
                ("client_id", &a.client_id),
                ("rate_limit", &a.rate_limit),
                ("timeout", &a.timeout),
            ]);
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
        Command::Update(a) => {
            let stored =
                store.credential(&a.name)?.ok_or_else(|| anyhow::anyhow!("no credential named `{}`", a.name))?;
            let mut change = CredentialUpdate {
                base_url: a.base_url.clone(),
                settings: settings([
                    ("header", &a.header),
                    ("username", &a.username),
                    ("token_url", &a.token_url),
                    ("client_id", &a.client_id),
                    ("rate_limit", &a.rate_limit),
                    ("timeout", &a.timeout),
                ]),
                secrets: BTreeMap::new(),
            };
            if a.secret_stdin || a.secret_env.is_some() {
                change.secrets.insert("secret".into(), read_secret(&a.name, a.secret_env.as_deref())?);
            }
            if let Some(var) = &a.password_env {
                let pw = std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))?;
                change.secrets.insert("password".into(), pw);
            }
            if change.base_url.is_none() && change.settings.is_empty() && change.secrets.is_empty() {
                anyhow::bail!(
                    "nothing to update: give --base-url, --rate-limit, --timeout, --header, --username, --token-url, \
                     --client-id, --secret-env VAR, --secret-stdin or --password-env VAR"
                );
            }
            let mut changed: Vec<String> = change.settings.keys().map(|k| k.replace('_', "-")).collect();
            if change.base_url.is_some() {
                changed.insert(0, "base-url".into());
            }
            changed.extend(change.secrets.keys().map(|k| format!("{k} (rotated)")));
            let vault = cx.home.vault()?;
            let now = roster_engine::clock::rfc3339(cx.clock.now());
            let updated = credentials::update(&vault, &stored, change, &now)?;
            store.put_credential(&updated)?;
            println!("credential `{}` updated: {}", updated.name, changed.join(", "));
            Ok(Outcome::Ok)
        }
        Command::List { json } => {
            let list = store.credentials()?;
            if json {
                let out: Vec<_> = list
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name, "kind": c.kind, "base_url": c.base_url,
                            "rate_limit": credentials::rate_limit_of(c),
                            "timeout": c.settings.get("timeout").cloned().unwrap_or_else(default_timeout),
                            "settings": c.settings, "created_at": c.created_at, "updated_at": c.updated_at,
                        })
                    })
                    .collect();
                output::json(&out)?;
            } else if list.is_empty() {
                println!("no credentials yet: `roster credentials add NAME --kind bearer --base-url URL`");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        let explicit = |key: &str| if c.settings.contains_key(key) { "" } else { " (default)" };
                        let rate = match credentials::rate_limit_of(c) {
                            Some(r) => format!("{r}{}", explicit("rate_limit")),
                            None => "none".into(),
                        };
                        let timeout = match c.settings.get("timeout") {
                            Some(t) => t.clone(),
                            None => format!("{} (default)", default_timeout()),
                        };
                        let others = c
                            .settings
                            .iter()
                            .filter(|(k, _)| !matches!(k.as_str(), "rate_limit" | "timeout"))
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ");
                        vec![c.name.clone(), c.kind.clone(), c.base_url.clone(), rate, timeout, others]
                    })
                    .collect();
                output::table(&["NAME", "KIND", "BASE URL", "RATE LIMIT", "TIMEOUT", "SETTINGS"], &rows);
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

fn default_timeout() -> String {
    format!("{}s", credentials::DEFAULT_TIMEOUT.as_secs())
}

/// The non-secret settings that were given, by their stored names.
fn settings<const N: usize>(given: [(&str, &Option<String>); N]) -> BTreeMap<String, String> {
    given.into_iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.trim().to_string()))).collect()
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
