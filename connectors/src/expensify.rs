//! Expensify Integration Server: a `policyList` job, then one `policy` job per policy with
//! `fields: ["employees"]` (connectors.md §1). Errors often come back as HTTP 200 with a
//! `responseCode` in the body. Calls are paced on our side to Expensify's published limits.

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use roster_blocks::credential::{Auth, Credential, CredentialKind, Secret};
use serde_json::{Value, json};

use crate::http::{Backoff, Failure, brief, send, status_failure};
use crate::{ConnectorError, ConnectorInfo, ErrorKind, Page, PageFuture, RAW_PAGES, Source, SyncOptions};

const VENDOR: &str = "Expensify";
const DEFAULT_URL: &str = "https://integrations.expensify.com/Integration-Server/ExpensifyIntegrations";

pub(crate) const INFO: ConnectorInfo = ConnectorInfo {
    name: "expensify",
    description: "Expensify policy employees (policyList, then policy with fields employees); \
                  each record gets policyID and policyName",
    credential_kind: CredentialKind::Expensify,
    default_mapping: &[
        ("email", "<<email>>"),
        ("username", "<<email>>"),
        ("expensify_approver", "<<submitsTo>>"),
        ("expensify_role", "<<role>>"),
        ("expensify_policy_id", "<<policyID>>"),
    ],
    key_path: "email",
};

struct Expensify {
    client: reqwest::Client,
    url: String,
    partner_user_id: String,
    partner_user_secret: Secret,
    max_retries: u32,
    /// None until the policy list is known: (id, name when known).
    policies: Option<VecDeque<(String, Option<String>)>>,
    given_policies: Vec<String>,
    pages: usize,
    /// Emails already yielded: one person in several policies (a policy owner, say) is
    /// one person, yielded with the first policy that lists them.
    seen: std::collections::HashSet<String>,
}

pub(crate) fn open(
    credential: &Credential,
    options: SyncOptions,
    client: reqwest::Client,
) -> Result<Box<dyn Source>, ConnectorError> {
    let Auth::Expensify { partner_user_id, partner_user_secret } = &credential.auth else {
        return Err(ConnectorError::new(ErrorKind::Config, "expensify needs an expensify credential"));
    };
    let url = if credential.base_url.trim().is_empty() { DEFAULT_URL } else { credential.base_url.trim() };
    let given_policies: Vec<String> =
        options.policy_ids.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
    Ok(Box::new(Expensify {
        client,
        url: url.to_string(),
        partner_user_id: partner_user_id.clone(),
        partner_user_secret: partner_user_secret.clone(),
        max_retries: options.max_retries,
        policies: None,
        given_policies,
        pages: 0,
        seen: std::collections::HashSet::new(),
    }))
}

impl Source for Expensify {
    fn next_page(&mut self) -> PageFuture<'_> {
        Box::pin(self.fetch())
    }
}

impl Expensify {
    async fn fetch(&mut self) -> Result<Option<Page>, ConnectorError> {
        if self.policies.is_none() {
            let list = if self.given_policies.is_empty() {
                let list = self.policy_list().await?;
                // Zero people would look like everyone left; make it a setup problem instead.
                if list.is_empty() {
                    return Err(ConnectorError::new(
                        ErrorKind::Config,
                        "Expensify lists no policies that this account administers; \
                         make it a policy admin or set policy_ids",
                    ));
                }
                list
            } else {
                self.given_policies.iter().map(|id| (id.clone(), None)).collect()
            };
            tracing::debug!(connector = "expensify", policies = list.len(), "policy list");
            self.policies = Some(list);
        }
        let Some((id, name)) = self.policies.as_ref().and_then(|q| q.front().cloned()) else {
            return Ok(None);
        };
        let mut body = self.job(json!({"type": "policy", "fields": ["employees"], "policyIDList": [id]})).await?;
        let raw = (self.pages < RAW_PAGES).then(|| body.clone());
        let Some(info) = body.get_mut("policyInfo").and_then(|i| i.get_mut(&id)) else {
            return Err(shape(format!("`policyInfo` has no entry for policy {}", id)));
        };
        let employees = match info.get_mut("employees").map(Value::take) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(e)) => e,
            Some(other) => {
                return Err(shape(format!("`employees` of policy {} is {}, not an array", id, brief(&other))));
            }
        };
        let mut records = Vec::with_capacity(employees.len());
        for mut e in employees {
            let Some(obj) = e.as_object_mut() else {
                // The engine counts it as one failed person; the others still sync.
                records.push(e);
                continue;
            };
            let email = obj.get("email").and_then(Value::as_str).map(|e| e.trim().to_lowercase());
            if let Some(email) = email
                && !self.seen.insert(email)
            {
                continue;
            }
            // The engine only sees the record, so it carries its policy.
            obj.insert("policyID".into(), Value::String(id.clone()));
            obj.insert("policyName".into(), name.clone().map_or(Value::Null, Value::String));
            records.push(e);
        }
        if let Some(q) = self.policies.as_mut() {
            q.pop_front();
        }
        self.pages += 1;
        tracing::debug!(connector = "expensify", page = self.pages, records = records.len(), "policy employees");
        // The policy list is finite and ours: there is no vendor cursor to loop on.
        Ok(Some(Page { records, raw, next: None }))
    }

    async fn policy_list(&self) -> Result<VecDeque<(String, Option<String>)>, ConnectorError> {
        let body = self.job(json!({"type": "policyList", "adminOnly": true})).await?;
        let Some(list) = body.get("policyList").and_then(Value::as_array) else {
            return Err(shape("no `policyList` array".into()));
        };
        list.iter()
            .map(|p| {
                let id = p.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
                let id = id.ok_or_else(|| shape(format!("a policy has no `id`: {}", brief(p))))?;
                Ok((id.to_string(), p.get("name").and_then(Value::as_str).map(str::to_string)))
            })
            .collect()
    }

    /// Runs one `get` job with retries, and returns its successful body.
    async fn job(&self, input_settings: Value) -> Result<Value, ConnectorError> {
        // Holds the secret: built once, sent as the form body only, never logged.
        let description = json!({
            "type": "get",
            "credentials": {
                "partnerUserID": self.partner_user_id,
                "partnerUserSecret": self.partner_user_secret.expose(),
            },
            "inputSettings": input_settings,
        })
        .to_string();
        let job = input_settings.get("type").and_then(Value::as_str).unwrap_or("?");
        let mut backoff = Backoff::new(self.max_retries);
        loop {
            pace(&format!("{}\n{}", self.url, self.partner_user_id)).await;
            tracing::debug!(connector = "expensify", job, "request");
            let request = self.client.post(&self.url).form(&[("requestJobDescription", description.as_str())]);
            let attempt = match send(VENDOR, request).await {
                Ok(resp) if resp.is_success() => resp.json(VENDOR).map_err(Failure::from).and_then(check_body),
                Ok(resp) => Err(status_failure(VENDOR, &resp)),
                Err(f) => Err(f),
            };
            match attempt {
                Ok(body) => return Ok(body),
                Err(f) => backoff.wait_or_fail(f).await?,
            }
        }
    }
}

/// Expensify reports most errors as HTTP 200 with `responseCode` in the body.
fn check_body(body: Value) -> Result<Value, Failure> {
    let code = match body.get("responseCode") {
        None | Some(Value::Null) => return Ok(body),
        Some(c) => c.as_u64().or_else(|| c.as_str().and_then(|s| s.trim().parse().ok())),
    };
    if matches!(code, Some(0 | 200)) {
        return Ok(body);
    }
    let message = body.get("responseMessage").and_then(Value::as_str).unwrap_or("(no responseMessage)");
    let code_text = code.map_or_else(|| body["responseCode"].to_string(), |c| c.to_string());
    let said = format!("{VENDOR} said {code_text}: {message}");
    let error = |kind| ConnectorError::new(kind, said.clone());
    // The Integration Server doc shows bad credentials as code 500 with this text.
    if message.starts_with("Not authorized to authenticate") {
        return Err(Failure::fatal(error(ErrorKind::Auth)));
    }
    Err(match code {
        Some(401 | 403) => Failure::fatal(error(ErrorKind::Auth)),
        Some(429) => Failure::transient(error(ErrorKind::RateLimited), None),
        Some(404 | 410) => Failure::fatal(error(ErrorKind::Config)),
        Some(500..=599) => Failure::transient(error(ErrorKind::Vendor), None),
        _ => Failure::fatal(error(ErrorKind::Vendor)),
    })
}

fn shape(what: String) -> ConnectorError {
    ConnectorError::new(ErrorKind::Malformed, format!("Expensify's answer has an unexpected shape: {what}"))
}

/// Expensify's help pages: up to 5 requests per 10 s and 20 per 60 s per account.
const WINDOWS: &[(usize, Duration)] = &[(5, Duration::from_secs(10)), (20, Duration::from_secs(60))];

/// Request times per account, shared by every Source in the process, since the limit is the
/// account's and not one sync's.
static SENT: LazyLock<Mutex<HashMap<String, VecDeque<Instant>>>> = LazyLock::new(Mutex::default);

/// Waits until one more request fits every window, then records it.
async fn pace(account: &str) {
    loop {
        let wait = {
            let mut sent = SENT.lock().unwrap_or_else(|e| e.into_inner());
            reserve(sent.entry(account.to_string()).or_default(), Instant::now())
        };
        match wait {
            None => return,
            Some(d) => {
                tracing::debug!(connector = "expensify", wait_ms = d.as_millis() as u64, "pacing to the rate limit");
                tokio::time::sleep(d).await;
            }
        }
    }
}

/// Records a request at `now` if it fits every window; otherwise how long until it would.
fn reserve(times: &mut VecDeque<Instant>, now: Instant) -> Option<Duration> {
    let longest = WINDOWS.iter().map(|w| w.1).max().unwrap_or_default();
    while times.front().is_some_and(|t| now.duration_since(*t) >= longest) {
        times.pop_front();
    }
    let wait = WINDOWS
        .iter()
        .filter_map(|&(max, per)| {
            let inside: Vec<&Instant> = times.iter().filter(|t| now.duration_since(**t) < per).collect();
            // The oldest request in a full window must age out before the next one fits.
            (inside.len() >= max).then(|| per - now.duration_since(*inside[inside.len() - max]))
        })
        .max();
    if wait.is_none() {
        times.push_back(now);
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(body: Value) -> Option<(ErrorKind, bool, String)> {
        check_body(body).err().map(|f| (f.error.kind, matches!(f.retry, crate::http::Retry::Yes(_)), f.error.message))
    }

    #[test]
    fn errors_inside_a_200() {
        assert!(kind(json!({"policyList": [], "responseCode": 200})).is_none());
        assert!(kind(json!({"policyList": []})).is_none());
        let (k, retry, msg) =
            kind(json!({"responseCode": 401, "responseMessage": "Not authorized to authenticate as user x"})).unwrap();
        assert_eq!((k, retry), (ErrorKind::Auth, false));
        assert_eq!(msg, "Expensify said 401: Not authorized to authenticate as user x");
        let (k, retry, _) =
            kind(json!({"responseCode": 500, "responseMessage": "Not authorized to authenticate as user x"})).unwrap();
        assert_eq!((k, retry), (ErrorKind::Auth, false));
        assert_eq!(kind(json!({"responseCode": 429, "responseMessage": "slow"})).unwrap().0, ErrorKind::RateLimited);
        assert!(kind(json!({"responseCode": 500, "responseMessage": "Internal error"})).unwrap().1);
        assert_eq!(
            kind(json!({"responseCode": 404, "responseMessage": "Policy not found"})).unwrap().0,
            ErrorKind::Config
        );
        assert_eq!(kind(json!({"responseCode": "410", "responseMessage": "bad"})).unwrap().0, ErrorKind::Config);
        assert_eq!(kind(json!({"responseCode": 207, "responseMessage": "odd"})).unwrap().0, ErrorKind::Vendor);
    }

    #[test]
    fn pacing_keeps_to_five_per_ten_seconds_and_twenty_per_minute() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut times = VecDeque::new();
        for i in 0..5 {
            assert_eq!(reserve(&mut times, at(i * 100)), None);
        }
        assert_eq!(reserve(&mut times, at(500)), Some(Duration::from_millis(9_500)));
        assert_eq!(reserve(&mut times, at(10_000)), None);
        // 20 spread out so no 10 s window is full; the 21st waits for the minute window.
        let mut times = VecDeque::new();
        for i in 0..20 {
            assert_eq!(reserve(&mut times, at(i * 2_500)), None, "{i}");
        }
        assert_eq!(reserve(&mut times, at(50_000)), Some(Duration::from_secs(10)));
        assert_eq!(reserve(&mut times, at(60_000)), None);
    }
}
