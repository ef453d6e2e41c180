use std::time::Duration;

use roster_sandbox::{Lifecycle, RateLimit, Sandbox, SandboxConfig};
use serde_json::{Value, json};

use crate::{client, config, parts, start};

fn roomy() -> SandboxConfig {
    SandboxConfig { expensify_rate_limit: RateLimit { requests: 1000, per: Duration::from_secs(10) }, ..config() }
}

fn creds(sb: &Sandbox) -> Value {
    json!({
        "partnerUserID": sb.config().expensify_partner_user_id,
        "partnerUserSecret": sb.config().expensify_partner_user_secret,
    })
}

async fn job(sb: &Sandbox, job: &Value) -> (u16, Value) {
    let form = [("requestJobDescription", job.to_string())];
    let r = client().post(sb.expensify_url()).form(&form).send().await.unwrap();
    let (status, body, _) = parts(r).await;
    (status, body)
}

#[tokio::test]
async fn policy_list_and_employees() {
    let sb = start(roomy()).await;
    let (status, list) = job(
        &sb,
        &json!({"type": "get", "credentials": creds(&sb), "inputSettings": {"type": "policyList", "adminOnly": true}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["responseCode"], 200);
    let policies = list["policyList"].as_array().unwrap();
    assert!(!policies.is_empty() && policies.len() <= 2);
    for p in policies {
        for key in ["outputCurrency", "owner", "role", "name", "id", "type"] {
            assert!(p[key].is_string(), "{key} in {p}");
        }
        assert_eq!(p["id"].as_str().unwrap().len(), 16);
    }
    let ids: Vec<&str> = policies.iter().map(|p| p["id"].as_str().unwrap()).collect();

    let (status, info) = job(
        &sb,
        &json!({"type": "get", "credentials": creds(&sb),
        "inputSettings": {"type": "policy", "fields": ["employees"], "policyIDList": ids}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(info["responseCode"], 200);
    let people = sb.people();
    let mut emails = std::collections::BTreeSet::new();
    for id in &ids {
        for e in info["policyInfo"][*id]["employees"].as_array().unwrap() {
            let email = e["email"].as_str().unwrap();
            let person = people.iter().find(|p| p.email == email).unwrap();
            assert_ne!(person.lifecycle, Lifecycle::Starter);
            let boss = person.manager_email.clone().unwrap_or_else(|| email.to_string());
            assert_eq!(e["submitsTo"], boss.as_str());
            assert!(["user", "admin", "auditor"].contains(&e["role"].as_str().unwrap()));
            emails.insert(email.to_string());
        }
    }
    let started = people.iter().filter(|p| p.lifecycle != Lifecycle::Starter).count();
    assert_eq!(emails.len(), started, "every started person is in a policy");
    sb.shutdown().await;
}

#[tokio::test]
async fn errors_come_back_as_http_200() {
    let sb = start(roomy()).await;
    let c = creds(&sb);
    let cases = [
        (
            json!({"type": "get", "credentials": {"partnerUserID": "intruder", "partnerUserSecret": "x"}, "inputSettings": {"type": "policyList"}}),
            401,
            "Not authorized to authenticate as user intruder",
        ),
        (
            json!({"credentials": c, "inputSettings": {"type": "policyList"}}),
            410,
            "Argument 'type' is missing or malformed",
        ),
        (json!({"type": 7, "credentials": c}), 410, "Argument 'type' is missing or malformed"),
        (
            json!({"type": "get", "credentials": c, "inputSettings": {"type": "policy", "fields": ["employees"]}}),
            410,
            "Required parameter 'policyIDList' is missing",
        ),
        (
            json!({"type": "get", "credentials": c, "inputSettings": {"type": "policy", "fields": ["employees"], "policyIDList": ["0000000000000000"]}}),
            404,
            "Policy not found: 0000000000000000",
        ),
    ];
    for (body, code, msg) in cases {
        let (status, resp) = job(&sb, &body).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(resp, json!({"responseMessage": msg, "responseCode": code}), "{body}");
    }
    let r = client().post(sb.expensify_url()).form(&[("other", "x")]).send().await.unwrap();
    let (status, resp, _) = parts(r).await;
    assert_eq!(status, 200);
    assert_eq!(resp["responseCode"], 410);
    sb.shutdown().await;
}

#[tokio::test]
async fn rate_limit_is_a_real_429() {
    let sb = start(config()).await; // default: 5 requests per 10 s
    let body = json!({"type": "get", "credentials": creds(&sb), "inputSettings": {"type": "policyList"}});
    for _ in 0..5 {
        let (status, resp) = job(&sb, &body).await;
        assert_eq!((status, resp["responseCode"].as_i64()), (200, Some(200)));
    }
    let form = [("requestJobDescription", body.to_string())];
    let r = client().post(sb.expensify_url()).form(&form).send().await.unwrap();
    let (status, resp, headers) = parts(r).await;
    assert_eq!(status, 429);
    assert_eq!(
        resp,
        json!({"responseMessage": "You have been rate-limited. Please try again later or contact help@expensify.com for assistance.", "responseCode": 429})
    );
    assert!(headers.contains_key("retry-after"));
    assert_eq!(sb.stats().expensify.rate_limited, 1);
    sb.shutdown().await;
}
