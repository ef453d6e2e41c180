//! Every Brex route, success and failure, checked against sandbox/specs/brex_team.oas.json.

use std::collections::BTreeSet;

use reqwest::Method;
use roster_sandbox::spec::Spec;
use roster_sandbox::{Faults, Vendor};
use serde_json::{Value, json};

use crate::brex::Brex;
use crate::{config, start};

/// The spec declares no error bodies; this is Brex's documented `{type, message, code?}`.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "message"],
        "properties": {
            "type": {"type": "string", "minLength": 1},
            "message": {"type": "string", "minLength": 1},
            "code": {"type": "string"}
        }
    })
}

struct Checked {
    spec: Spec,
    brex: Brex,
    ok: BTreeSet<String>,
    errors_checked: usize,
}

impl Checked {
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let (status, resp) = self.brex.send(method.clone(), path, body.as_ref(), key).await;
        let label = format!("{method} {template}");
        if status == 200 {
            let schema = self
                .spec
                .response_schema(method.as_str(), template, 200)
                .unwrap_or_else(|| panic!("spec has no 200 schema for {label}"));
            if let Err(v) = self.spec.validate(schema, &resp) {
                panic!("{label} response violates the spec: {v:?}\n{resp}");
            }
            self.ok.insert(label);
        } else {
            if let Err(v) = self.spec.validate(&error_schema(), &resp) {
                panic!("{label} {status} error body is not Brex-shaped: {v:?}\n{resp}");
            }
            self.errors_checked += 1;
        }
        (status, resp)
    }
}

#[tokio::test]
async fn every_brex_response_validates_against_the_spec() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/brex_team.oas.json")).expect("spec file");
    let sb = start(config()).await;
    let mut c =
        Checked { spec: Spec::from_json(&text).unwrap(), brex: Brex::new(&sb), ok: BTreeSet::new(), errors_checked: 0 };
    use Method as M;

    // Whole lists, every page, so every generated user and card is checked.
    for (list, template) in [("users", "/v2/users"), ("cards", "/v2/cards")] {
        let mut cursor = String::new();
        loop {
            let (_, page) = c.call(M::GET, template, &format!("/v2/{list}?limit=10{cursor}"), None, None).await;
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
    }
    let (_, me) = c.call(M::GET, "/v2/users/me", "/v2/users/me", None, None).await;
    let me = me["id"].as_str().unwrap().to_string();
    c.call(M::GET, "/v2/users/{id}", &format!("/v2/users/{me}"), None, None).await;
    c.call(M::GET, "/v2/users/{id}", "/v2/users/cuuser_x", None, None).await;
    c.call(M::GET, "/v2/users", "/v2/users?limit=5000", None, None).await;

    let (_, user) = c
        .call(M::POST, "/v2/users", "/v2/users", Some(json!({"first_name": "Spec", "last_name": "Check", "email": "spec.check@acme.test", "metadata": {"source": "test"}})), None)
        .await;
    let uid = user["id"].as_str().unwrap().to_string();
    c.call(M::POST, "/v2/users", "/v2/users", Some(json!({"first_name": "Spec"})), None).await;
    c.call(
        M::PUT,
        "/v2/users/{id}",
        &format!("/v2/users/{uid}"),
        Some(json!({"status": "ACTIVE", "manager_id": me})),
        Some("u1"),
    )
    .await;
    c.call(M::PUT, "/v2/users/{id}", &format!("/v2/users/{uid}"), Some(json!({"status": "GONE"})), None).await;

    let physical = json!({
        "owner": {"type": "USER", "user_id": uid}, "card_name": "Spec card", "card_type": "PHYSICAL", "limit_type": "USER",
        "mailing_address": {"line1": "1 Main St", "line2": null, "city": "Austin", "state": "TX", "country": "US", "postal_code": "78701", "phone_number": null},
        "metadata": {"k": "v"}, "card_attribute_preferences": {"three_domain_secure_enabled_preference": "THREE_DOMAIN_SECURE_ENABLED"}
    });
    let (_, card) = c.call(M::POST, "/v2/cards", "/v2/cards", Some(physical), Some("spec-1")).await;
    let card_id = card["id"].as_str().unwrap().to_string();
    let vendor = json!({
        "owner": {"type": "USER", "user_id": uid}, "card_name": "Spec vendor", "card_type": "VIRTUAL", "limit_type": "CARD",
        "spend_controls": {"spend_limit": {"amount": 2500, "currency": "USD"}, "spend_duration": "ONE_TIME", "reason": "test", "lock_after_date": "2027-01-01", "parent_budget_id": null}
    });
    let (_, vcard) = c.call(M::POST, "/v2/cards", "/v2/cards", Some(vendor), Some("spec-2")).await;
    let vcard_id = vcard["id"].as_str().unwrap().to_string();
    c.call(M::POST, "/v2/cards", "/v2/cards", Some(json!({})), None).await;
    c.call(M::GET, "/v2/cards", &format!("/v2/cards?user_id={uid}"), None, None).await;
    c.call(M::GET, "/v2/cards/{id}", &format!("/v2/cards/{card_id}"), None, None).await;
    c.call(M::GET, "/v2/cards/{id}", "/v2/cards/ncard_x", None, None).await;
    c.call(
        M::PUT,
        "/v2/cards/{id}",
        &format!("/v2/cards/{vcard_id}"),
        Some(json!({"spend_controls": {"spend_limit": {"amount": 9}, "spend_duration": "YEARLY"}})),
        None,
    )
    .await;
    c.call(M::PUT, "/v2/cards/{id}", &format!("/v2/cards/{vcard_id}"), Some(json!({"metadata": []})), None).await;
    let reason = json!({"reason": "OTHER", "description": null});
    c.call(M::POST, "/v2/cards/{id}/lock", &format!("/v2/cards/{card_id}/lock"), Some(reason.clone()), None).await;
    c.call(M::POST, "/v2/cards/{id}/lock", &format!("/v2/cards/{card_id}/lock"), Some(reason.clone()), None).await;
    c.call(M::POST, "/v2/cards/{id}/unlock", &format!("/v2/cards/{card_id}/unlock"), None, None).await;
    c.call(
        M::POST,
        "/v2/cards/{id}/terminate",
        &format!("/v2/cards/{card_id}/terminate"),
        Some(reason.clone()),
        Some("t1"),
    )
    .await;
    c.call(
        M::POST,
        "/v2/cards/{id}/terminate",
        &format!("/v2/cards/{card_id}/terminate"),
        Some(reason.clone()),
        Some("t1"),
    )
    .await;
    c.call(M::POST, "/v2/cards/{id}/terminate", &format!("/v2/cards/{card_id}/terminate"), Some(reason), Some("t2"))
        .await;

    for list in ["departments", "locations", "titles"] {
        let template = format!("/v2/{list}");
        let (_, page) = c.call(M::GET, &template, &template, None, None).await;
        let id = page["items"][0]["id"].as_str().unwrap().to_string();
        let one = format!("/v2/{list}/{{id}}");
        c.call(M::GET, &one, &format!("/v2/{list}/{id}"), None, None).await;
        c.call(M::GET, &one, &format!("/v2/{list}/missing"), None, None).await;
        c.call(M::GET, &template, &format!("/v2/{list}?limit=1&name=Nowhere"), None, None).await;
    }

    // Injected faults use the vendor's error shape too.
    sb.set_vendor_faults(Vendor::Brex, Faults { error_500: 1.0, ..Faults::default() });
    let (status, _) = c.call(M::GET, "/v2/users", "/v2/users", None, None).await;
    assert_eq!(status, 500);
    sb.set_vendor_faults(Vendor::Brex, Faults { rate_limit_429: 1.0, ..Faults::default() });
    let (status, _) = c.call(M::GET, "/v2/users", "/v2/users", None, None).await;
    assert_eq!(status, 429);
    sb.set_faults(Faults::default());

    let want: BTreeSet<String> = [
        "GET /v2/users",
        "POST /v2/users",
        "GET /v2/users/me",
        "GET /v2/users/{id}",
        "PUT /v2/users/{id}",
        "GET /v2/cards",
        "POST /v2/cards",
        "GET /v2/cards/{id}",
        "PUT /v2/cards/{id}",
        "POST /v2/cards/{id}/lock",
        "POST /v2/cards/{id}/unlock",
        "POST /v2/cards/{id}/terminate",
        "GET /v2/departments",
        "GET /v2/departments/{id}",
        "GET /v2/locations",
        "GET /v2/locations/{id}",
        "GET /v2/titles",
        "GET /v2/titles/{id}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(c.ok, want, "every route answered 200 at least once");
    assert!(c.errors_checked >= 12, "{}", c.errors_checked);
    sb.shutdown().await;
}
