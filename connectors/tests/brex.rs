//! The Brex connector against the sandbox's fake Brex on loopback.

mod common;

use std::collections::HashSet;

use common::{client, config, drain, start, started};
use roster_blocks::credential::{Auth, Credential, Secret};
use roster_connectors::{ErrorKind, SyncOptions, open};
use roster_sandbox::{Faults, Sandbox, Vendor};

fn credential(sb: &Sandbox, token: &str) -> Credential {
    Credential { name: "brex".into(), base_url: sb.brex_url(), auth: Auth::Bearer { token: Secret::new(token) } }
}

fn good(sb: &Sandbox) -> Credential {
    credential(sb, &sb.config().brex_token)
}

fn options(page_size: u32) -> SyncOptions {
    SyncOptions { page_size: Some(page_size), ..SyncOptions::default() }
}

#[tokio::test]
async fn pages_to_the_end() {
    let sb = start(config(40)).await;
    let expected = started(&sb);
    let mut source = open("brex", &good(&sb), options(7), client(), None).unwrap();
    let pages = drain(source.as_mut()).await.unwrap();

    assert_eq!(pages.len(), expected.len().div_ceil(7));
    assert!(pages.iter().all(|p| p.records.len() <= 7));
    let raw: Vec<bool> = pages.iter().map(|p| p.raw.is_some()).collect();
    assert!(raw[..3].iter().all(|r| *r) && raw[3..].iter().all(|r| !*r), "{raw:?}");
    assert_eq!(pages[0].raw.as_ref().unwrap()["items"].as_array().unwrap().len(), 7);

    let records: Vec<_> = pages.into_iter().flat_map(|p| p.records).collect();
    assert_eq!(records.len(), expected.len());
    let ids: HashSet<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), records.len(), "no user twice");
    let emails: HashSet<&str> = records.iter().map(|r| r["email"].as_str().unwrap()).collect();
    assert_eq!(emails, expected.iter().map(|p| p.email.as_str()).collect());
    // The vendor's record as-is, nothing flattened or renamed.
    assert!(records[0].get("manager_id").is_some() && records[0].get("remote_display_id").is_some());

    // The stream stays finished.
    assert!(source.next_page().await.unwrap().is_none());
    assert_eq!(sb.stats().brex.requests, expected.len().div_ceil(7) as u64);
    sb.shutdown().await;
}

#[tokio::test]
async fn wrong_token_is_auth_with_brex_words() {
    let sb = start(config(10)).await;
    let mut source = open("brex", &credential(&sb, "bxt_wrong-token"), options(5), client(), None).unwrap();
    let e = source.next_page().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.starts_with("Brex said 403: Invalid or Revoked Token"), "{e}");
    assert!(!e.message.contains("bxt_wrong-token"), "{e}");
    assert_eq!(sb.stats().brex.requests, 1, "an auth failure is not retried");
    sb.shutdown().await;
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried() {
    let sb = start(config(30)).await;
    sb.set_vendor_faults(Vendor::Brex, Faults { error_500: 0.3, drop_connection: 0.15, seed: 8, ..Faults::default() });
    let mut source = open("brex", &good(&sb), options(4), client(), None).unwrap();
    let records: usize = drain(source.as_mut()).await.unwrap().iter().map(|p| p.records.len()).sum();
    assert_eq!(records, started(&sb).len());
    let faults = sb.stats().brex.faults;
    assert!(faults.error_500 > 0 && faults.drop_connection > 0, "{faults:?}");
    sb.shutdown().await;
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let sb = start(config(10)).await;
    sb.set_vendor_faults(Vendor::Brex, Faults { error_500: 1.0, ..Faults::default() });
    let opts = SyncOptions { max_retries: 2, ..options(5) };
    let mut source = open("brex", &good(&sb), opts, client(), None).unwrap();
    let e = source.next_page().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Vendor);
    assert_eq!(e.message, "Brex said 500: Internal Server Error (INTERNAL_SERVER_ERROR) (gave up after 2 retries)");
    assert_eq!(sb.stats().brex.requests, 3);

    // The position is kept: once Brex recovers, the same source carries on.
    sb.set_vendor_faults(Vendor::Brex, Faults::default());
    assert_eq!(source.next_page().await.unwrap().unwrap().records.len(), 5);
    sb.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_people_stream_page_by_page() {
    let sb = start(config(10_000)).await;
    let expected = started(&sb).len();
    assert!(expected > 9_000, "{expected}");
    let mut source = open("brex", &good(&sb), SyncOptions::default(), client(), None).unwrap();
    let (mut pages, mut total) = (0, 0);
    let mut ids = HashSet::new();
    while let Some(page) = source.next_page().await.unwrap() {
        pages += 1;
        assert!(page.records.len() <= 1000, "one vendor page at a time");
        assert_eq!(page.raw.is_some(), pages <= 3);
        total += page.records.len();
        ids.extend(page.records.iter().map(|r| r["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(total, expected);
    assert_eq!(ids.len(), expected);
    assert_eq!(pages, expected.div_ceil(1000));
    sb.shutdown().await;
}
