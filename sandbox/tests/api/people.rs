use std::time::Instant;

use roster_sandbox::{Lifecycle, SandboxConfig};

use crate::brex::Brex;
use crate::{config, start, today};

#[tokio::test]
async fn same_seed_same_company_in_every_vendor() {
    let a = start(config()).await;
    let b = start(config()).await;
    assert_eq!(a.people(), b.people());
    let (_, users_a) = Brex::new(&a).get("/v2/users?limit=1000").await;
    let (_, users_b) = Brex::new(&b).get("/v2/users?limit=1000").await;
    assert_eq!(users_a, users_b, "Brex ids are seeded too");
    let (_, cards_a) = Brex::new(&a).get("/v2/cards?limit=1000").await;
    let (_, cards_b) = Brex::new(&b).get("/v2/cards?limit=1000").await;
    assert_eq!(cards_a, cards_b);

    let c = start(SandboxConfig { seed: 8, ..config() }).await;
    assert_ne!(a.people(), c.people());

    let people = a.people();
    assert!(people.iter().any(|p| p.lifecycle == Lifecycle::Starter && p.start_date == today()));
    assert!(people.iter().any(|p| p.lifecycle == Lifecycle::Leaver));
    for sb in [a, b, c] {
        sb.shutdown().await;
    }
}

#[tokio::test]
async fn a_hundred_thousand_people_page_quickly() {
    let t = Instant::now();
    let sb = start(SandboxConfig { people: 100_000, page_size_sage: 1000, ..config() }).await;
    let started = t.elapsed();
    let people = sb.people();
    assert_eq!(people.len(), 100_000);
    assert!(people.windows(2).all(|w| w[0].sage_id < w[1].sage_id));
    let http = crate::client();
    let c = sb.config();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", c.sage_client_id.as_str()),
        ("client_secret", c.sage_client_secret.as_str()),
    ];
    let token: serde_json::Value =
        http.post(sb.sage_token_url()).form(&form).send().await.unwrap().json().await.unwrap();
    let marker = &people[people.len() - 1500].sage_id;
    let t = Instant::now();
    let r = http
        .get(format!("{}/services/apexrest/spapi/v4/employees?marker={marker}", sb.sage_instance_url()))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1000);
    let (status, users) = Brex::new(&sb).get("/v2/users?limit=1000").await;
    assert_eq!(status, 200);
    assert_eq!(users["items"].as_array().unwrap().len(), 1000);
    eprintln!("100k: start {started:?}, two 1000-item pages {:?}", t.elapsed());
    sb.shutdown().await;
}
