//! The Sage People connector against the sandbox's fake Salesforce token endpoint and
//! Sage People API on loopback.

mod common;

use std::time::Duration;

use common::{client, config, drain, start};
use roster_blocks::credential::{Auth, Credential, Secret};
use roster_connectors::{ErrorKind, SyncOptions, open};
use roster_sandbox::{Faults, Sandbox, SandboxConfig, Vendor};
use serde_json::Value;

const EMPLOYEES: &str = "GET /services/apexrest/spapi/v4/employees";

/// Password grant with the sandbox's credentials; the API address comes from the token.
fn credential(sb: &Sandbox) -> Credential {
    let c = sb.config();
    Credential {
        name: "sage".into(),
        base_url: String::new(),
        auth: Auth::OAuth2 {
            token_url: sb.sage_token_url(),
            client_id: c.sage_client_id.clone(),
            client_secret: Secret::new(&c.sage_client_secret),
            username: Some(c.sage_username.clone()),
            password: Some(Secret::new(&c.sage_password)),
        },
    }
}

/// 25 people, 10 a page: three pages, then 204.
fn paged() -> SandboxConfig {
    SandboxConfig { page_size_sage: 10, ..config(25) }
}

fn ids(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn pages_to_the_end_by_marker() {
    let sb = start(paged()).await;
    let mut source = open("sage_people", &credential(&sb), SyncOptions::default(), client(), None).unwrap();
    let pages = drain(source.as_mut()).await.unwrap();
    assert_eq!(pages.iter().map(|p| p.records.len()).collect::<Vec<_>>(), [10, 10, 5]);
    assert!(pages.iter().all(|p| p.raw.as_ref().is_some_and(|r| r["version"].is_string())));

    let records: Vec<Value> = pages.into_iter().flat_map(|p| p.records).collect();
    let expected: Vec<String> = sb.people().into_iter().map(|p| p.sage_id).collect();
    assert_eq!(ids(&records), expected, "everyone once, in id order, starters included");
    // As the vendor sends it: nested objects stay nested.
    assert!(records[0]["currentEmployment"]["startDate"].is_string());
    assert!(records[0]["workAddress"]["name"].is_string());

    let stats = sb.stats();
    assert_eq!(stats.sage_tokens_issued, 1, "one token for the whole run");
    assert_eq!(stats.route(Vendor::Sage, EMPLOYEES), 4, "three pages and the 204");
    assert_eq!(stats.status(Vendor::Sage, 204), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn client_credentials_grant_and_base_url_override() {
    let sb = start(paged()).await;
    let mut cred = credential(&sb);
    if let Auth::OAuth2 { username, password, .. } = &mut cred.auth {
        *username = None;
        *password = None;
    }
    let mut source = open("sage_people", &cred, SyncOptions::default(), client(), None).unwrap();
    assert_eq!(drain(source.as_mut()).await.unwrap().iter().map(|p| p.records.len()).sum::<usize>(), 25);

    // A non-empty base URL wins over the token's instance_url.
    cred.base_url = format!("{}/elsewhere", sb.sage_instance_url());
    let mut source = open("sage_people", &cred, SyncOptions::default(), client(), None).unwrap();
    let e = source.next_page().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.starts_with("Sage People said 404: Could not find a match for URL"), "{e}");
    sb.shutdown().await;
}

#[tokio::test]
async fn a_new_token_when_the_session_expires() {
    let sb = start(paged()).await;
    let mut source = open("sage_people", &credential(&sb), SyncOptions::default(), client(), None).unwrap();
    let first = source.next_page().await.unwrap().unwrap();
    sb.expire_sage_tokens();
    let rest = drain(source.as_mut()).await.unwrap();
    let mut all = ids(&first.records);
    all.extend(rest.iter().flat_map(|p| ids(&p.records)));
    assert_eq!(all, sb.people().into_iter().map(|p| p.sage_id).collect::<Vec<_>>());
    let stats = sb.stats();
    assert_eq!(stats.sage_tokens_issued, 2);
    assert_eq!(stats.status(Vendor::Sage, 401), 1, "the second page was retried with the new token");
    sb.shutdown().await;
}

#[tokio::test]
async fn a_new_token_when_the_token_lifetime_runs_out() {
    let ttl = Duration::from_millis(150);
    let sb = start(SandboxConfig { sage_token_ttl: ttl, ..paged() }).await;
    let mut source = open("sage_people", &credential(&sb), SyncOptions::default(), client(), None).unwrap();
    let mut count = source.next_page().await.unwrap().unwrap().records.len();
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    count += drain(source.as_mut()).await.unwrap().iter().map(|p| p.records.len()).sum::<usize>();
    assert_eq!(count, 25);
    assert_eq!(sb.stats().sage_tokens_issued, 2);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_session_that_dies_at_once_is_auth_after_one_refresh() {
    let sb = start(SandboxConfig { sage_token_ttl: Duration::ZERO, ..paged() }).await;
    let mut source = open("sage_people", &credential(&sb), SyncOptions::default(), client(), None).unwrap();
    let e = source.next_page().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.message, "Sage People said 401: Session expired or invalid (INVALID_SESSION_ID)");
    assert_eq!(sb.stats().sage_tokens_issued, 2);
    sb.shutdown().await;
}

#[tokio::test]
async fn bad_client_secret_is_auth() {
    let sb = start(paged()).await;
    let mut cred = credential(&sb);
    if let Auth::OAuth2 { client_secret, .. } = &mut cred.auth {
        *client_secret = Secret::new("wrong-client-secret");
    }
    let mut source = open("sage_people", &cred, SyncOptions::default(), client(), None).unwrap();
    let e = source.next_page().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.message, "Sage People token endpoint said 400: invalid client credentials (invalid_client)");
    let stats = sb.stats();
    assert_eq!((stats.sage.requests, stats.route(Vendor::Sage, EMPLOYEES)), (1, 0), "no retry, no API call");
    sb.shutdown().await;
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried() {
    let sb = start(paged()).await;
    sb.set_vendor_faults(Vendor::Sage, Faults { error_500: 0.3, drop_connection: 0.2, seed: 4, ..Faults::default() });
    let mut source = open("sage_people", &credential(&sb), SyncOptions::default(), client(), None).unwrap();
    let records: usize = drain(source.as_mut()).await.unwrap().iter().map(|p| p.records.len()).sum();
    assert_eq!(records, 25);
    let faults = sb.stats().sage.faults;
    assert!(faults.error_500 > 0 && faults.drop_connection > 0, "{faults:?}");
    sb.shutdown().await;
}
