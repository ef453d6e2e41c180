//! `roster credentials add|list|update|remove`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

use clap::{Args, Subcommand};
use roster_api::answers;
use roster_api::wire::{CredentialView, Removed};
use roster_engine::credentials::{self, CredentialUpdate, NewCredential};
use roster_engine::model::CredentialKind;

use super::remote::{self, Remote};
use super::{Context, Outcome, output};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Add or replace a credential. The secret comes from stdin or --secret-env, never argv.
    Add(Box<AddArgs>),
    /// List credentials (never shows secrets).
    List {
        /// Print the credentials as JSON (names, kinds, settings and limits; no secret).
        #[arg(long)]
        json: bool,
    },
    /// Change a credential's base URL, rate limit, timeout or settings, or rotate its
    /// secret, keeping everything not named.
    Update(Box<UpdateArgs>),
    /// Remove a credential.
    Remove {
        /// The credential to remove.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Name workflows refer to (`"credential": "brex"`).
    name: String,
    #[arg(long, help = kind_help())]
    kind: CredentialKind,
    /// Where relative request URLs go, e.g. https://api.brex.com.
    #[arg(long, default_value = "")]
    base_url: String,
    #[command(flatten)]
    settings: SettingArgs,
    /// Read the secret from this environment variable instead of stdin.
    #[arg(long)]
    secret_env: Option<String>,
    /// OAuth2 password grant: read the password from this environment variable.
    #[arg(long)]
    password_env: Option<String>,
}

/// The non-secret settings `add` sets and `update` changes, one flag each.
#[derive(Args, Debug)]
struct SettingArgs {
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
    /// Requests allowed per period, shared by every run using this credential, e.g.
    /// 1000/60s (default: the vendor's documented limit when known).
    #[arg(long)]
    rate_limit: Option<String>,
    /// Request timeout, e.g. 30s (default 30s, at most 10m).
    #[arg(long)]
    timeout: Option<String>,
}

impl SettingArgs {
    /// The settings given, by the names the store keeps them under.
    fn given(&self) -> BTreeMap<String, String> {
        [
            ("header", &self.header),
            ("username", &self.username),
            ("token_url", &self.token_url),
            ("client_id", &self.client_id),
            ("rate_limit", &self.rate_limit),
            ("timeout", &self.timeout),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.trim().to_string())))
        .collect()
    }
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The credential to change.
    name: String,
    /// Where relative request URLs go, e.g. https://api.brex.com.
    #[arg(long)]
    base_url: Option<String>,
    #[command(flatten)]
    settings: SettingArgs,
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
    // While `roster serve` holds the store, the same commands go through its API (the
    // secrets in the request body, over loopback, behind the token; never echoed back).
    let store = match cx.home.open_store().await {
        Ok(s) => Ok(s),
        Err(e) if remote::is_locked(&e) => Err(Remote::find(cx)?),
        Err(e) => return Err(e.into()),
    };
    match command {
        Command::Add(a) => {
            let mut secrets = BTreeMap::new();
            secrets.insert("secret".to_string(), read_secret(&a.name, a.secret_env.as_deref())?);
            if let Some(var) = &a.password_env {
                secrets.insert("password".to_string(), from_env(var)?);
            }
            let settings = a.settings.given();
            let new = NewCredential { name: a.name.clone(), kind: a.kind, base_url: a.base_url, settings, secrets };
            let saved = match &store {
                Ok(store) => {
                    let now = roster_engine::clock::rfc3339(cx.clock.now());
                    let stored = credentials::seal(&cx.home.vault()?, new, &now)?;
                    store.credentials.put_credential(&stored).await?;
                    answers::credential(&stored)
                }
                Err(remote) => remote.post("/v1/credentials", &new).await?,
            };
            let base_url = if saved.base_url.is_empty() { "no base URL" } else { &saved.base_url };
            println!("credential `{}` saved ({}, {base_url})", saved.name, saved.kind);
            Ok(Outcome::Ok)
        }
        Command::Update(a) => {
            let mut change = CredentialUpdate {
                base_url: a.base_url.clone(),
                settings: a.settings.given(),
                secrets: BTreeMap::new(),
            };
            if a.secret_stdin || a.secret_env.is_some() {
                change.secrets.insert("secret".into(), read_secret(&a.name, a.secret_env.as_deref())?);
            }
            if let Some(var) = &a.password_env {
                change.secrets.insert("password".into(), from_env(var)?);
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
            let updated = match &store {
                Ok(store) => {
                    let now = roster_engine::clock::rfc3339(cx.clock.now());
                    answers::credential(&credentials::update_in(store, &cx.home.vault()?, &a.name, change, &now).await?)
                }
                Err(remote) => remote.patch(&format!("/v1/credentials/{}", a.name), &change).await?,
            };
            println!("credential `{}` updated: {}", updated.name, changed.join(", "));
            Ok(Outcome::Ok)
        }
        Command::List { json } => {
            let list: Vec<CredentialView> = match &store {
                Ok(store) => store.credentials.credentials().await?.iter().map(answers::credential).collect(),
                Err(remote) => remote.get("/v1/credentials", remote::NO_QUERY).await?,
            };
            print_list(&list, json)?;
            Ok(Outcome::Ok)
        }
        Command::Remove { name } => {
            match &store {
                Ok(store) => {
                    if !store.credentials.delete_credential(&name).await? {
                        anyhow::bail!("no credential named `{name}`")
                    }
                }
                Err(remote) => {
                    let _: Removed = remote.delete(&format!("/v1/credentials/{name}")).await?;
                }
            }
            println!("credential `{name}` removed");
            Ok(Outcome::Ok)
        }
    }
}

/// `credentials list`: the answers of [`answers::credential`], as a table or JSON.
fn print_list(list: &[CredentialView], json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(&list);
    }
    if list.is_empty() {
        println!("no credentials yet: `roster credentials add NAME --kind bearer --base-url URL`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let explicit = |key: &str| if c.settings.contains_key(key) { "" } else { " (default)" };
            let rate = match &c.rate_limit {
                Some(r) => format!("{r}{}", explicit("rate_limit")),
                None => "none".into(),
            };
            let timeout = format!("{}{}", c.timeout, explicit("timeout"));
            let others = c
                .settings
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "rate_limit" | "timeout"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            vec![c.name.clone(), c.kind.to_string(), c.base_url.clone(), rate, timeout, others]
        })
        .collect();
    output::table(&["NAME", "KIND", "BASE URL", "RATE LIMIT", "TIMEOUT", "SETTINGS"], &rows);
    Ok(())
}

/// `--kind`'s help, from the one list of kinds.
fn kind_help() -> String {
    format!("The credential's kind: {}.", CredentialKind::names())
}

/// A secret given as the name of the environment variable that holds it.
fn from_env(var: &str) -> anyhow::Result<String> {
    std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))
}

/// The secret from `--secret-env VAR`, or stdin (one line when typed, all of it when piped).
fn read_secret(name: &str, env: Option<&str>) -> anyhow::Result<String> {
    if let Some(var) = env {
        return from_env(var);
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
