//! The Expensify connector against the sandbox's fake Integration Server on loopback.
//! Opened without a shared limiter, each source paces itself to Expensify's documented
//! 5 requests per 10 s; each test stays under 5 requests.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{client, config, drain, start, started};
use roster_blocks::credential::{Auth, Credential, Secret};
use roster_connectors::{ErrorKind, SyncOptions, open};
use roster_sandbox::{Faults, RateLimit, Sandbox, SandboxConfig, Vendor};
use serde_json::Value;

fn credential(sb: &Sandbox, secret: &str) -> Credential {
    Credential {
        name: "expensify".into(),
        base_url: sb.expensify_url(),
        auth: Auth::Expensify {
            partner_user_id: sb.config().expensify_partner_user_id.clone(),
            partner_user_secret: Secret::new(secret),
        },
    }
}

fn good(sb: &Sandbox) -> Credential {
    credential(sb, &sb.config().expensify_partner_user_secret)
}

/// 40 people spread over the US and the UK give two policies.
fn two_policies() -> SandboxConfig {
    config(40)
}

#[tokio::test]
async fn lists_policies_then_their_employees() {
    let sb = start(two_policies()).await;
    let mut source = open("expensify", &good(&sb), SyncOptions::default(), client(), None).unwrap();
    let pages = drain(source.as_mut()).await.unwrap();
    assert_eq!(pages.len(), 2, "one page per policy");
    assert!(pages.iter().all(|p| p.raw.as_ref().is_some_and(|r| r["responseCode"] == 200)));

    let records: Vec<Value> = pages.into_iter().flat_map(|p| p.records).collect();
    let emails: HashSet<&str> = records.iter().map(|r| r["email"].as_str().unwrap()).collect();
    let expected: HashSet<String> = started(&sb).into_iter().map(|p| p.email).collect();
    assert_eq!(emails, expected.iter().map(String::as_str).collect());
    // The policy owner belongs to both policies, as in real accounts: yielded once.
    assert_eq!(records.len(), expected.len());
    let policies: HashSet<(&str, &str)> =
        records.iter().map(|r| (r["policyID"].as_str().unwrap(), r["policyName"].as_str().unwrap())).collect();
    assert_eq!(policies.len(), 2, "{policies:?}");
    assert!(records.iter().all(|r| r["role"].is_string() && r["submitsTo"].is_string()));

    let stats = sb.stats();
    assert_eq!(stats.expensify.requests, 3, "policyList + one policy job each");
    sb.shutdown().await;
}

#[tokio::test]
async fn given_policy_ids_skip_the_policy_list() {
    let sb = start(two_policies()).await;
    let mut source = open("expensify", &good(&sb), SyncOptions::default(), client(), None).unwrap();
    let first = source.next_page().await.unwrap().unwrap();
    let id = first.records[0]["policyID"].as_str().unwrap().to_string();
    sb.reset_stats();

    let opts = SyncOptions { policy_ids: vec![id.clone()], ..SyncOptions::default() };
    let mut source = open("expensify", &good(&sb), opts, client(), None).unwrap();
    let pages = drain(source.as_mut()).await.unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].records.len(), first.records.len());
    assert!(pages[0].records.iter().all(|r| r["policyID"] == id.as_str() && r["policyName"].is_null()));
    assert_eq!(sb.stats().expensify.requests, 1);

    let opts = SyncOptions { policy_ids: vec!["0000000000000000".into()], ..SyncOptions::default() };
    let mut source = open("expensify", &good(&sb), opts, client(), None).unwrap();
    let e = source.next_page().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(e.message, "Expensify said 404: Policy not found: 0000000000000000");
    sb.shutdown().await;
}

#[tokio::test]
async fn bad_secret_in_a_200_is_auth_with_expensify_words() {
    let sb = start(config(10)).await;
    let mut source =
        open("expensify", &credential(&sb, "not-the-secret"), SyncOptions::default(), client(), None).unwrap();
    let e = source.next_page().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.message, "Expensify said 401: Not authorized to authenticate as user sandbox_partner_user");
    let stats = sb.stats();
    assert_eq!((stats.expensify.requests, stats.status(Vendor::Expensify, 200)), (1, 1), "HTTP 200, not retried");
    sb.shutdown().await;
}

#[tokio::test]
async fn rate_limit_is_waited_out() {
    let limit = RateLimit { requests: 2, per: Duration::from_secs(1) };
    let sb = start(SandboxConfig { expensify_rate_limit: limit, ..two_policies() }).await;
    let mut source = open("expensify", &good(&sb), SyncOptions::default(), client(), None).unwrap();
    let records: usize = drain(source.as_mut()).await.unwrap().iter().map(|p| p.records.len()).sum();
    assert_eq!(records, started(&sb).len());
    let stats = sb.stats();
    assert_eq!(stats.expensify.rate_limited, 1, "the third job in one second was refused once");
    assert_eq!(stats.status(Vendor::Expensify, 429), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn internal_errors_in_and_outside_the_body_are_retried() {
    let sb = start(config(12)).await;
    sb.set_vendor_faults(Vendor::Expensify, Faults { error_500: 0.5, seed: 3, ..Faults::default() });
    let mut source = open("expensify", &good(&sb), SyncOptions::default(), client(), None).unwrap();
    let records: usize = drain(source.as_mut()).await.unwrap().iter().map(|p| p.records.len()).sum();
    assert_eq!(records, started(&sb).len());
    let stats = sb.stats();
    // With this seed two of the four requests fail: one as HTTP 500, one as HTTP 200 with
    // responseCode 500.
    assert_eq!(stats.expensify.faults.error_500, 2, "{:?}", stats.expensify);
    assert_eq!((stats.status(Vendor::Expensify, 500), stats.status(Vendor::Expensify, 200)), (1, 3));
    sb.shutdown().await;
}
