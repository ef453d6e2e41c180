use std::time::Duration;

use roster_sandbox::{Lifecycle, RateLimit, Sandbox, SandboxConfig};
use serde_json::{Value, json};

use crate::{client, config, parts, start};

pub struct Brex {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Brex {
    pub fn new(sb: &Sandbox) -> Brex {
        Brex { http: client(), base: sb.brex_url(), token: sb.config().brex_token.clone() }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.unwrap();
        let (s, b, _) = parts(r).await;
        (s, b)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let (s, b, _) = parts(req.send().await.unwrap()).await;
        (s, b)
    }

    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body), key).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body), None).await
    }

    /// The id of an ACTIVE user other than the token owner.
    pub async fn active_user(&self) -> String {
        let (_, page) = self.get("/v2/users?limit=1000").await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .find(|u| u["status"] == "ACTIVE")
            .map(|u| u["id"].as_str().unwrap().to_string())
            .unwrap()
    }
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn auth_missing_and_wrong_token() {
    let sb = start(config()).await;
    let http = client();
    let url = format!("{}/v2/users", sb.brex_url());

    let (status, body, headers) = parts(http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body, Value::Null, "no credentials: empty body");
    assert!(headers.contains_key("x-brex-trace-id"));

    let r = http.get(&url).bearer_auth("bxt_wrong").send().await.unwrap();
    let (status, body, headers) = parts(r).await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({"type": "FORBIDDEN", "message": "Invalid or Revoked Token"}));
    assert!(headers.contains_key("x-brex-trace-id"));

    let r = http.get(&url).bearer_auth(&sb.config().brex_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    sb.shutdown().await;
}

#[tokio::test]
async fn users_paginate_to_the_end_with_limit_bounds() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let started = sb.people().iter().filter(|p| p.lifecycle != Lifecycle::Starter).count();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v2/users?limit=7&cursor={c}"),
            None => "/v2/users?limit=7".to_string(),
        };
        let (status, page) = brex.get(&path).await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), started);
    assert_eq!(pages, started.div_ceil(7));
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());

    let (status, page) = brex.get("/v2/users").await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), started, "default limit 100");
    assert!(page["next_cursor"].is_null());

    for bad in ["limit=0", "limit=1001", "limit=-5", "limit=ten", "cursor=bm9wZQ"] {
        let (status, body) = brex.get(&format!("/v2/users?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["type"], "BAD_REQUEST");
    }
    let (status, _) = brex.get("/v2/users?limit=1000").await;
    assert_eq!(status, 200);
    let (status, _) = brex.get("/v2/users?limit=1").await;
    assert_eq!(status, 200);

    // A cursor from another list is not accepted.
    let (_, cards) = brex.get("/v2/cards?limit=1").await;
    let card_cursor = cards["next_cursor"].as_str().unwrap();
    let (status, _) = brex.get(&format!("/v2/users?cursor={card_cursor}")).await;
    assert_eq!(status, 400);
    sb.shutdown().await;
}

#[tokio::test]
async fn users_filters_get_me_and_not_found() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let people = sb.people();
    let regular = people.iter().find(|p| p.lifecycle == Lifecycle::Regular && p.manager_email.is_some()).unwrap();

    let upper = regular.email.to_uppercase();
    let (status, page) = brex.get(&format!("/v2/users?email={upper}")).await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let user = &items[0];
    assert_eq!(user["email"], regular.email.as_str());
    assert_eq!(user["remote_display_id"], regular.employee_id.as_str());
    assert!(user["manager_id"].as_str().unwrap().starts_with("cuuser_"));

    let (_, page) = brex.get(&format!("/v2/users?remote_display_id={}", regular.employee_id)).await;
    assert_eq!(page["items"][0]["email"], regular.email.as_str());

    let starter = people.iter().find(|p| p.lifecycle == Lifecycle::Starter).unwrap();
    let (_, page) = brex.get(&format!("/v2/users?email={}", starter.email)).await;
    assert_eq!(page["items"], json!([]), "starters are not in Brex yet");

    let id = user["id"].as_str().unwrap();
    let (status, one) = brex.get(&format!("/v2/users/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(&one, user);

    let (status, me) = brex.get("/v2/users/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], people[0].email.as_str());

    let (status, body) = brex.get("/v2/users/cuuser_doesnotexist").await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"type": "NOT_FOUND", "message": "Not Found", "code": "USER_NOT_FOUND"}));

    let (status, body) = brex.get("/v2/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(body["type"], "NOT_FOUND");
    sb.shutdown().await;
}

#[tokio::test]
async fn invite_and_update_users() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let manager = brex.active_user().await;

    let invite =
        json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada.lovelace@acme.test", "manager_id": manager});
    let (status, user) = brex.post("/v2/users", &invite, None).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["status"], "INVITED");
    assert_eq!(user["manager_id"], manager.as_str());
    let id = user["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("cuuser_") && id.len() == 32);

    let (status, body) = brex.post("/v2/users", &invite, None).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("already exists"), "{body}");

    let cases = [
        (json!({"first_name": "A", "last_name": "B"}), "email is invalid"),
        (json!({"first_name": "A", "last_name": "B", "email": "not-an-email"}), "email is invalid"),
        (json!({"first_name": "", "last_name": "B", "email": "x@acme.test"}), "first_name is invalid"),
        (json!({"first_name": "Zoë", "last_name": "B", "email": "zoe@acme.test"}), "first_name is invalid"),
        (json!({"first_name": 5, "last_name": "B", "email": "y@acme.test"}), "first_name is invalid"),
        (
            json!({"first_name": "A", "last_name": "B", "email": "z@acme.test", "manager_id": "cuuser_nope"}),
            "manager_id is invalid",
        ),
        (
            json!({"first_name": "A", "last_name": "B", "email": "w@acme.test", "metadata": {"k": 1}}),
            "metadata.k is invalid",
        ),
    ];
    for (body, want) in cases {
        let (status, err) = brex.post("/v2/users", &body, None).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(err["type"], "BAD_REQUEST");
        assert!(message(&err).starts_with(want), "{body} -> {err}");
    }

    let r = brex
        .http
        .post(format!("{}/v2/users", brex.base))
        .bearer_auth(&brex.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, err, _) = parts(r).await;
    assert_eq!(status, 400);
    assert!(message(&err).contains("Malformed JSON"), "{err}");

    let (status, user) = brex.put(&format!("/v2/users/{id}"), &json!({"status": "ACTIVE"})).await;
    assert_eq!(status, 200);
    assert_eq!(user["status"], "ACTIVE");
    let (status, user) = brex.put(&format!("/v2/users/{id}"), &json!({"status": "DISABLED", "title_id": null})).await;
    assert_eq!(status, 200);
    assert_eq!(user["status"], "DISABLED");
    assert_eq!(user["manager_id"], manager.as_str(), "unmentioned fields stay");

    for bad in ["CLOSED", "INVITED", "active"] {
        let (status, err) = brex.put(&format!("/v2/users/{id}"), &json!({"status": bad})).await;
        assert_eq!(status, 400, "{bad}");
        assert!(message(&err).starts_with("status is invalid"), "{err}");
    }
    let (status, err) = brex.put("/v2/users/cuuser_nope", &json!({"status": "ACTIVE"})).await;
    assert_eq!(status, 404);
    assert_eq!(err["code"], "USER_NOT_FOUND");

    let fx = sb.stats().side_effects;
    assert_eq!(fx.users_invited, 1);
    assert_eq!(fx.users_updated, 2);
    sb.shutdown().await;
}

fn virtual_card(user: &str, name: &str) -> Value {
    json!({"owner": {"type": "USER", "user_id": user}, "card_name": name, "card_type": "VIRTUAL", "limit_type": "USER"})
}

#[tokio::test]
async fn create_card_rules() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let user = brex.active_user().await;

    let (status, err) = brex.post("/v2/cards", &virtual_card(&user, "No key"), None).await;
    assert_eq!(status, 400);
    assert!(message(&err).contains("Idempotency-Key"), "{err}");

    let (status, card) = brex.post("/v2/cards", &virtual_card(&user, "Laptop"), Some("k-virtual")).await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["status"], "ACTIVE");
    assert!(card["id"].as_str().unwrap().starts_with("ncard_"));
    assert!(card["spend_controls"].is_null());

    let vendor = json!({
        "owner": {"type": "USER", "user_id": user}, "card_name": "Party Planning Committee",
        "card_type": "VIRTUAL", "limit_type": "CARD",
        "spend_controls": {"spend_limit": {"amount": 100000, "currency": "USD"}, "spend_duration": "MONTHLY", "lock_after_date": "2027-08-24"}
    });
    let (status, card) = brex.post("/v2/cards", &vendor, Some("k-vendor")).await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["spend_controls"]["spend_available"], json!({"amount": 100000, "currency": "USD"}));

    let physical = json!({
        "owner": {"type": "USER", "user_id": user}, "card_name": "Travel", "card_type": "PHYSICAL", "limit_type": "USER",
        "mailing_address": {"line1": "1 Main St", "city": "Austin", "state": "TX", "country": "US", "postal_code": "78701"}
    });
    let (status, card) = brex.post("/v2/cards", &physical, Some("k-physical")).await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["status"], "SHIPPED");

    let o = json!({"type": "USER", "user_id": user});
    let cases = [
        (
            json!({"owner": o, "card_name": "x", "card_type": "VIRTUAL", "limit_type": "CARD"}),
            "spend_controls is invalid",
        ),
        (
            json!({"owner": o, "card_name": "x", "card_type": "PHYSICAL", "limit_type": "CARD",
                "spend_controls": {"spend_limit": {"amount": 1}, "spend_duration": "MONTHLY"},
                "mailing_address": {"line1": "a"}}),
            "card_type is invalid",
        ),
        (
            json!({"owner": o, "card_name": "x", "card_type": "VIRTUAL", "limit_type": "USER",
                "spend_controls": {"spend_limit": {"amount": 1}, "spend_duration": "MONTHLY"}}),
            "spend_controls is invalid",
        ),
        (
            json!({"owner": o, "card_name": "x", "card_type": "PHYSICAL", "limit_type": "USER"}),
            "mailing_address is invalid",
        ),
        (
            json!({"owner": o, "card_name": "x", "card_type": "PHYSICAL", "limit_type": "USER",
                "mailing_address": {"line1": "x".repeat(70)}}),
            "mailing_address.line1 is invalid",
        ),
        (json!({"owner": o, "card_name": "", "card_type": "VIRTUAL", "limit_type": "USER"}), "card_name is invalid"),
        (json!({"owner": o, "card_name": "x", "card_type": "METAL", "limit_type": "USER"}), "card_type is invalid"),
        (json!({"owner": o, "card_name": "x", "card_type": "VIRTUAL"}), "limit_type is invalid"),
        (
            json!({"owner": {"type": "USER", "user_id": "cuuser_nope"}, "card_name": "x", "card_type": "VIRTUAL", "limit_type": "USER"}),
            "owner.user_id is invalid",
        ),
        (
            json!({"owner": {"type": "TEAM", "user_id": user}, "card_name": "x", "card_type": "VIRTUAL", "limit_type": "USER"}),
            "owner.type is invalid",
        ),
        (
            json!({"owner": o, "card_name": "x", "card_type": "VIRTUAL", "limit_type": "CARD",
                "spend_controls": {"spend_limit": {"amount": 1}, "spend_duration": "WEEKLY"}}),
            "spend_controls.spend_duration is invalid",
        ),
        (
            json!({"owner": o, "card_name": "x", "card_type": "VIRTUAL", "limit_type": "CARD",
                "spend_controls": {"spend_limit": {"amount": 1}, "spend_duration": "MONTHLY", "lock_after_date": "soon"}}),
            "spend_controls.lock_after_date is invalid",
        ),
        (
            json!({"owner": o, "card_name": "Café", "card_type": "VIRTUAL", "limit_type": "USER"}),
            "card_name is invalid",
        ),
    ];
    for (i, (body, want)) in cases.into_iter().enumerate() {
        let (status, err) = brex.post("/v2/cards", &body, Some(&format!("bad-{i}"))).await;
        assert_eq!(status, 400, "{body}");
        assert!(message(&err).starts_with(want), "{body} -> {err}");
    }
    assert_eq!(sb.stats().side_effects.cards_created, 3);
    sb.shutdown().await;
}

#[tokio::test]
async fn idempotent_replay_returns_the_same_card_and_creates_nothing() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let user = brex.active_user().await;
    let body = virtual_card(&user, "Replay me");

    let (s1, first) = brex.post("/v2/cards", &body, Some("key-1")).await;
    let (s2, second) = brex.post("/v2/cards", &body, Some("key-1")).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second);

    let (_, cards) = brex.get(&format!("/v2/cards?user_id={user}&limit=1000")).await;
    let named: Vec<&Value> =
        cards["items"].as_array().unwrap().iter().filter(|c| c["card_name"] == "Replay me").collect();
    assert_eq!(named.len(), 1);

    let stats = sb.stats();
    assert_eq!(stats.side_effects.cards_created, 1);
    assert_eq!(stats.idempotent_replays, 1);
    assert_eq!(stats.cards_created_by_key["key-1"], 1);
    assert_eq!(stats.cards_created_by_owner_and_name[&format!("{user}/Replay me")], 1);
    assert_eq!(stats.duplicate_side_effects, 0);
    assert_eq!(stats.idempotency_key_conflicts, 0);

    // Reusing the key for a different body is a client bug: still replayed, and counted.
    let (_, third) = brex.post("/v2/cards", &virtual_card(&user, "Other"), Some("key-1")).await;
    assert_eq!(third, first);
    assert_eq!(sb.stats().idempotency_key_conflicts, 1);

    // The same create under a fresh key is a second card: the duplicate counter catches it.
    let (status, _) = brex.post("/v2/cards", &body, Some("key-2")).await;
    assert_eq!(status, 200);
    let stats = sb.stats();
    assert_eq!(stats.side_effects.cards_created, 2);
    assert_eq!(stats.duplicate_side_effects, 1);
    assert_eq!(stats.cards_created_by_owner_and_name[&format!("{user}/Replay me")], 2);

    // Replays cover PUT and errors too: the first answer is what comes back.
    let (s, a) = brex
        .send(reqwest::Method::PUT, "/v2/users/cuuser_nope", Some(&json!({"status": "ACTIVE"})), Some("put-1"))
        .await;
    let (s2, b) = brex
        .send(reqwest::Method::PUT, "/v2/users/cuuser_nope", Some(&json!({"status": "ACTIVE"})), Some("put-1"))
        .await;
    assert_eq!((s, s2), (404, 404));
    assert_eq!(a, b);
    sb.shutdown().await;
}

#[tokio::test]
async fn card_lifecycle_and_terminated_cards_stay_terminated() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let user = brex.active_user().await;
    let (_, card) = brex.post("/v2/cards", &virtual_card(&user, "Lifecycle"), Some("lc")).await;
    let id = card["id"].as_str().unwrap().to_string();
    let reason = json!({"reason": "CARD_LOST", "description": "left on a train"});

    let (status, c) = brex.post(&format!("/v2/cards/{id}/lock"), &reason, None).await;
    assert_eq!((status, c["status"].as_str()), (200, Some("LOCKED")));
    let (status, err) = brex.post(&format!("/v2/cards/{id}/lock"), &reason, None).await;
    assert_eq!(status, 400);
    assert!(message(&err).contains("already locked"));

    let (status, c) = brex.send(reqwest::Method::POST, &format!("/v2/cards/{id}/unlock"), None, None).await;
    assert_eq!((status, c["status"].as_str()), (200, Some("ACTIVE")));
    let (status, _) = brex.send(reqwest::Method::POST, &format!("/v2/cards/{id}/unlock"), None, None).await;
    assert_eq!(status, 400, "unlocking an unlocked card");

    for bad in [json!({}), json!({"reason": "BORED"})] {
        let (status, err) = brex.post(&format!("/v2/cards/{id}/lock"), &bad, None).await;
        assert_eq!(status, 400);
        assert!(message(&err).starts_with("reason is invalid"), "{err}");
    }
    let (status, _) = brex.send(reqwest::Method::POST, &format!("/v2/cards/{id}/lock"), None, None).await;
    assert_eq!(status, 400, "lock needs a body");

    let (status, c) =
        brex.post(&format!("/v2/cards/{id}/terminate"), &json!({"reason": "DO_NOT_NEED_VIRTUAL_CARD"}), None).await;
    assert_eq!((status, c["status"].as_str()), (200, Some("TERMINATED")));

    for action in ["lock", "terminate"] {
        let (status, err) = brex.post(&format!("/v2/cards/{id}/{action}"), &reason, None).await;
        assert_eq!(status, 400, "{action}");
        assert!(message(&err).contains("terminated"), "{err}");
    }
    let (status, err) = brex.send(reqwest::Method::POST, &format!("/v2/cards/{id}/unlock"), None, None).await;
    assert_eq!(status, 400);
    assert!(message(&err).contains("terminated"));

    let (status, c) = brex.get(&format!("/v2/cards/{id}")).await;
    assert_eq!((status, c["status"].as_str()), (200, Some("TERMINATED")));
    let (status, err) = brex.get("/v2/cards/ncard_nope").await;
    assert_eq!(status, 404);
    assert_eq!(err, json!({"type": "NOT_FOUND", "message": "Not Found", "code": "CARD_NOT_FOUND"}));
    let (status, _) = brex.post("/v2/cards/ncard_nope/lock", &reason, None).await;
    assert_eq!(status, 404);

    let fx = sb.stats().side_effects;
    assert_eq!((fx.cards_locked, fx.cards_unlocked, fx.cards_terminated), (1, 1, 1));
    sb.shutdown().await;
}

#[tokio::test]
async fn update_card_spend_controls() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let user = brex.active_user().await;
    let vendor = json!({
        "owner": {"type": "USER", "user_id": user}, "card_name": "Ads", "card_type": "VIRTUAL", "limit_type": "CARD",
        "spend_controls": {"spend_limit": {"amount": 5000}, "spend_duration": "MONTHLY"}
    });
    let (_, card) = brex.post("/v2/cards", &vendor, Some("ads")).await;
    let id = card["id"].as_str().unwrap();
    let (status, card) = brex
        .put(&format!("/v2/cards/{id}"), &json!({"spend_controls": {"spend_limit": {"amount": 9000, "currency": "USD"}}, "metadata": {"team": "growth"}}))
        .await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["spend_controls"]["spend_limit"]["amount"], 9000);
    assert_eq!(card["spend_controls"]["spend_duration"], "MONTHLY");
    assert_eq!(card["metadata"], json!({"team": "growth"}));

    let (_, plain) = brex.post("/v2/cards", &virtual_card(&user, "Plain"), Some("plain")).await;
    let (status, err) = brex
        .put(
            &format!("/v2/cards/{}", plain["id"].as_str().unwrap()),
            &json!({"spend_controls": {"spend_limit": {"amount": 1}}}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(message(&err).starts_with("spend_controls is invalid"));
    sb.shutdown().await;
}

#[tokio::test]
async fn cards_by_user_and_reference_lists() {
    let sb = start(config()).await;
    let brex = Brex::new(&sb);
    let user = brex.active_user().await;
    let (status, page) = brex.get(&format!("/v2/cards?user_id={user}")).await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().unwrap();
    assert!((1..=3).contains(&items.len()));
    assert!(items.iter().all(|c| c["owner"]["user_id"] == user.as_str()));
    let (_, none) = brex.get("/v2/cards?user_id=cuuser_nobody").await;
    assert_eq!(none["items"], json!([]));

    for (list, code) in
        [("departments", "DEPARTMENT_NOT_FOUND"), ("locations", "LOCATION_NOT_FOUND"), ("titles", "TITLE_NOT_FOUND")]
    {
        let (status, page) = brex.get(&format!("/v2/{list}")).await;
        assert_eq!(status, 200);
        let first = page["items"][0].clone();
        let (status, one) = brex.get(&format!("/v2/{list}/{}", first["id"].as_str().unwrap())).await;
        assert_eq!((status, &one), (200, &first));
        let name = first["name"].as_str().unwrap().replace(' ', "%20");
        let (_, filtered) = brex.get(&format!("/v2/{list}?name={name}")).await;
        assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
        let (status, err) = brex.get(&format!("/v2/{list}/nope")).await;
        assert_eq!(status, 404);
        assert_eq!(err["code"], code);
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn rate_limit_per_token_answers_429_with_retry_after() {
    let sb =
        start(SandboxConfig { brex_rate_limit: RateLimit { requests: 3, per: Duration::from_secs(60) }, ..config() })
            .await;
    let http = client();
    let url = format!("{}/v2/users/me", sb.brex_url());
    for _ in 0..3 {
        let r = http.get(&url).bearer_auth(&sb.config().brex_token).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http.get(&url).bearer_auth(&sb.config().brex_token).send().await.unwrap();
    let (status, body, headers) = parts(r).await;
    assert_eq!(status, 429);
    assert_eq!(body["type"], "TOO_MANY_REQUESTS");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    assert_eq!(sb.stats().brex.rate_limited, 1);
    sb.shutdown().await;
}
