use std::time::{Duration, Instant};

use roster_sandbox::{Echo, Faults, Vendor};
use serde_json::json;

use crate::brex::Brex;
use crate::{client, config, parts, start};

#[tokio::test]
async fn injected_500_and_429_are_counted() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    sb.set_faults(Faults { error_500: 1.0, ..Faults::default() });
    let (status, body) = brex.get("/v2/users").await;
    assert_eq!(status, 500);
    assert_eq!(body["type"], "INTERNAL_SERVER_ERROR");

    sb.set_faults(Faults { rate_limit_429: 1.0, ..Faults::default() });
    let r = client().get(format!("{}/v2/users", sb.brex_url())).bearer_auth(&brex.token).send().await.unwrap();
    let (status, _, headers) = parts(r).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");

    let stats = sb.stats();
    assert_eq!(stats.brex.faults.error_500, 1);
    assert_eq!(stats.brex.faults.rate_limit_429, 1);
    assert_eq!(stats.brex.requests, 2);
    assert_eq!(stats.status(Vendor::Brex, 500), 1);
    assert_eq!(stats.status(Vendor::Brex, 429), 1);
    assert_eq!(stats.route(Vendor::Brex, "GET /v2/users"), 2);
    sb.shutdown().await;
}

#[tokio::test]
async fn dropped_after_the_side_effect_then_retried_with_the_same_key() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let user = brex.active_user().await;
    let body = json!({"owner": {"type": "USER", "user_id": user}, "card_name": "Flaky", "card_type": "VIRTUAL", "limit_type": "USER"});

    sb.set_vendor_faults(Vendor::Brex, Faults { drop_connection: 1.0, drop_after_effect: 1.0, ..Faults::default() });
    let attempt = brex
        .http
        .post(format!("{}/v2/cards", brex.base))
        .bearer_auth(&brex.token)
        .header("Idempotency-Key", "flaky-1")
        .json(&body)
        .send()
        .await;
    assert!(attempt.is_err(), "the connection is closed without a response");
    let stats = sb.stats();
    assert_eq!(stats.side_effects.cards_created, 1, "applied before the drop");
    assert_eq!(stats.brex.faults.drop_connection, 1);
    assert_eq!(stats.brex.faults.drop_after_side_effect, 1);
    assert_eq!(stats.brex.responses_by_status.values().sum::<u64>(), 1, "only the user lookup was answered");

    sb.set_faults(Faults::default());
    let (status, card) = brex.post("/v2/cards", &body, Some("flaky-1")).await;
    assert_eq!(status, 200);
    assert_eq!(card["card_name"], "Flaky");
    let stats = sb.stats();
    assert_eq!(stats.side_effects.cards_created, 1, "the retry was a replay");
    assert_eq!(stats.idempotent_replays, 1);
    assert_eq!(stats.cards_created_by_key["flaky-1"], 1);

    // Dropped before the handler: nothing happens at all.
    sb.set_faults(Faults { drop_connection: 1.0, drop_after_effect: 0.0, ..Faults::default() });
    let attempt = brex
        .http
        .post(format!("{}/v2/cards", brex.base))
        .bearer_auth(&brex.token)
        .header("Idempotency-Key", "flaky-2")
        .json(&body)
        .send()
        .await;
    assert!(attempt.is_err());
    assert_eq!(sb.stats().side_effects.cards_created, 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn slow_faults_delay_and_faults_reach_every_vendor() {
    let sb = start(config()).await;
    sb.set_faults(Faults { slow: 1.0, slow_for: Duration::from_millis(150), ..Faults::default() });
    let t = Instant::now();
    let r = client().post(sb.sage_token_url()).form(&[("grant_type", "x")]).send().await.unwrap();
    assert_eq!(r.status(), 400, "served normally after the delay");
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(sb.stats().sage.faults.slow, 1);

    sb.set_faults(Faults { error_500: 1.0, ..Faults::default() });
    let r = client().post(sb.sage_token_url()).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let form = [("requestJobDescription", "{}")];
    let mut http_500 = 0;
    for _ in 0..4 {
        let r = client().post(sb.expensify_url()).form(&form).send().await.unwrap();
        let (status, body, _) = parts(r).await;
        assert_eq!(body["responseCode"], 500);
        if status == 500 {
            http_500 += 1;
        } else {
            assert_eq!(status, 200, "Expensify also reports errors inside a 200");
        }
    }
    assert_eq!(sb.stats().expensify.faults.error_500, 4);
    let _ = http_500; // the split between the two shapes is seeded, not asserted
    sb.shutdown().await;
}

#[tokio::test]
async fn fault_draws_are_deterministic() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let faults = Faults { error_500: 0.3, rate_limit_429: 0.2, seed: 99, ..Faults::default() };
    let mut runs = Vec::new();
    for _ in 0..2 {
        sb.set_faults(faults.clone());
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(brex.get("/v2/users/me").await.0);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&500) && runs[0].contains(&429) && runs[0].contains(&200));
    let f = sb.stats().brex.faults;
    assert_eq!(f.error_500 + f.rate_limit_429, runs.concat().iter().filter(|s| **s != 200).count() as u64);
    sb.shutdown().await;
}

#[tokio::test]
async fn echo_switches_hand_the_credentials_back_and_redirects_point_elsewhere() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    sb.set_vendor_faults(Vendor::Brex, Faults { echo_credentials: Echo::Reject, ..Faults::default() });
    let r = client().get(format!("{}/v2/users", sb.brex_url())).bearer_auth(&brex.token).send().await.unwrap();
    let (status, body, headers) = parts(r).await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {}", brex.token);
    assert!(body["message"].as_str().unwrap().contains(&bearer), "{body}");
    assert_eq!(headers["x-brex-trace-id"], bearer.as_str());

    sb.set_vendor_faults(Vendor::Brex, Faults { echo_credentials: Echo::Accept, ..Faults::default() });
    let (status, body) = brex.get("/v2/users").await;
    assert_eq!(status, 200);
    assert!(body["items"][0]["echo"].as_str().unwrap().contains(&bearer), "{body}");

    sb.set_vendor_faults(Vendor::Brex, Faults { redirect_to: Some("http://127.0.0.1:9".into()), ..Faults::default() });
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_follow.get(format!("{}/v2/users?limit=5", sb.brex_url())).send().await.unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "http://127.0.0.1:9/v2/users?limit=5");

    // The admin echo route answers with any kind's credentials, at the status asked for.
    let r =
        client().get(format!("{}/_sandbox/echo?status=401", sb.brex_url())).header("X-Api-Key", "k-123").send().await;
    let (status, body, headers) = parts(r.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["echo"], "k-123");
    assert_eq!(headers["x-request-id"], "k-123");
    sb.shutdown().await;
}
