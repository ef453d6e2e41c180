use std::time::Duration;

use roster_sandbox::spec::Spec;
use roster_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};

use crate::{client, config, parts, start};

fn sage_spec() -> Spec {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/sage_people.oas.json")).expect("spec file");
    Spec::from_json(&text).unwrap()
}

async fn token_with(sb: &Sandbox, form: &[(&str, &str)]) -> (u16, Value) {
    let r = client().post(sb.sage_token_url()).form(form).send().await.unwrap();
    let (status, body, _) = parts(r).await;
    (status, body)
}

async fn token(sb: &Sandbox) -> String {
    let c = sb.config();
    let (status, body) = token_with(
        sb,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.sage_client_id),
            ("client_secret", &c.sage_client_secret),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn api(sb: &Sandbox, token: &str, path_and_query: &str, accept: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}/services/apexrest/spapi/v4{path_and_query}", sb.sage_instance_url()))
        .bearer_auth(token)
        .header("Accept", accept)
        .send()
        .await
        .unwrap();
    let (status, body, _) = parts(r).await;
    (status, body)
}

#[tokio::test]
async fn token_grants() {
    let sb = start(config()).await;
    let c = sb.config().clone();
    let (status, body) = token_with(
        &sb,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.sage_client_id),
            ("client_secret", &c.sage_client_secret),
        ],
    )
    .await;
    assert_eq!(status, 200);
    for key in ["access_token", "instance_url", "id", "token_type", "issued_at", "signature"] {
        assert!(body[key].is_string(), "{key}");
    }
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["instance_url"], sb.sage_instance_url().as_str());

    let password = [
        ("grant_type", "password"),
        ("client_id", c.sage_client_id.as_str()),
        ("client_secret", c.sage_client_secret.as_str()),
        ("username", c.sage_username.as_str()),
        ("password", c.sage_password.as_str()),
    ];
    let (status, body) = token_with(&sb, &password).await;
    assert_eq!(status, 200);
    assert!(body["access_token"].is_string());

    let mut wrong = password;
    wrong[4].1 = "guess";
    let (status, body) = token_with(&sb, &wrong).await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant", "error_description": "authentication failure"})));

    let (status, body) =
        token_with(&sb, &[("grant_type", "client_credentials"), ("client_id", "nope"), ("client_secret", "x")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = token_with(
        &sb,
        &[("grant_type", "client_credentials"), ("client_id", &c.sage_client_id), ("client_secret", "x")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = token_with(&sb, &[("grant_type", "magic")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")));
    assert_eq!(sb.stats().sage_tokens_issued, 2);
    sb.shutdown().await;
}

#[tokio::test]
async fn employees_page_by_marker_until_204() {
    let sb = start(SandboxConfig { page_size_sage: 7, ..config() }).await;
    let spec = sage_spec();
    let schema = spec.response_schema("GET", "/employees", 200).unwrap();
    let token = token(&sb).await;

    let mut ids: Vec<String> = Vec::new();
    let mut marker = String::new();
    let mut pages = 0;
    loop {
        let (status, body) = api(&sb, &token, &format!("/employees{marker}"), "application/json").await;
        if status == 204 {
            assert_eq!(body, Value::Null);
            break;
        }
        assert_eq!(status, 200);
        spec.validate(schema, &body).unwrap();
        assert_eq!(body["version"], "4.8");
        let data = body["data"].as_array().unwrap();
        assert!(!data.is_empty() && data.len() <= 7);
        ids.extend(data.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        marker = format!("?marker={}", ids.last().unwrap());
        pages += 1;
    }
    let people = sb.people();
    assert_eq!(ids.len(), people.len());
    assert_eq!(pages, people.len().div_ceil(7));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted by id");

    let leaver = people.iter().find(|p| !p.active).unwrap();
    let (status, one) = api(&sb, &token, &format!("/employees/{}", leaver.sage_id), "application/json").await;
    assert_eq!(status, 200);
    let by_id = spec.response_schema("GET", "/employees/{employeeId}", 200).unwrap();
    spec.validate(by_id, &one).unwrap();
    assert_eq!(one["data"]["currentEmployment"]["active"], false);
    assert_eq!(one["data"]["emailAddress"], leaver.email.as_str());
    assert_eq!(one["data"]["currentEmployment"]["endDate"], leaver.end_date.unwrap().to_string().as_str());

    let (status, body) =
        api(&sb, &token, "/employees?$filter=currentEmployment.active%20eq%20true", "application/json").await;
    assert_eq!(status, 200);
    let active = people.iter().filter(|p| p.active).count().min(7);
    assert_eq!(body["data"].as_array().unwrap().len(), active);
    assert!(body["data"].as_array().unwrap().iter().all(|e| e["currentEmployment"]["active"] == true));
    sb.shutdown().await;
}

#[tokio::test]
async fn sage_errors() {
    let sb = start(config()).await;
    let spec = sage_spec();
    let token = token(&sb).await;
    let expect_error = |status: u16, body: &Value, want_status: u16, code: &str| {
        assert_eq!(status, want_status, "{body}");
        spec.validate_component("ErrorResponse", body).unwrap();
        spec.validate_component("Error", &body["error"]).unwrap();
        spec.validate_component("InnerError", &body["error"]["innererror"]).unwrap();
        assert_eq!(body["error"]["innererror"]["code"], code);
    };

    let (s, b) = api(&sb, &token, "/employees?marker=a2K000000000000AAA", "application/json").await;
    expect_error(s, &b, 400, "INVALID_MARKER");
    let (s, b) = api(&sb, &token, "/employees", "text/xml").await;
    expect_error(s, &b, 406, "INVALID_ACCEPT_HEADER");
    let (s, b) = api(&sb, &token, "/employees?$filter=shoeSize%20eq%20'9'", "application/json").await;
    expect_error(s, &b, 400, "UNKNOWN_IDENTIFIER");
    let (s, b) = api(&sb, &token, "/employees?$filter=id%20eq%20'a'%20or%20id%20eq%20'b'", "application/json").await;
    expect_error(s, &b, 400, "INVALID_FILTER");
    let (s, b) = api(&sb, &token, "/employees?page=2", "application/json").await;
    expect_error(s, &b, 400, "INVALID_QUERY_STRING");
    let (s, _) = api(&sb, &token, "/employees/a2K000000000000AAA", "application/json").await;
    assert_eq!(s, 404);

    let session = json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
    let (s, b) = api(&sb, "not-a-token", "/employees", "application/json").await;
    assert_eq!((s, &b), (401, &session));
    spec.validate_component("SalesforceErrorResponse", &b).unwrap();
    let r = client()
        .get(format!("{}/services/apexrest/spapi/v4/employees", sb.sage_instance_url()))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    sb.shutdown().await;
}

#[tokio::test]
async fn expired_token_gets_401_then_a_fresh_token_works() {
    let sb = start(SandboxConfig { sage_token_ttl: Duration::from_millis(600), ..config() }).await;
    let first = token(&sb).await;
    let (status, _) = api(&sb, &first, "/employees", "application/json").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, body) = api(&sb, &first, "/employees", "application/json").await;
    assert_eq!(status, 401);
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
    let second = token(&sb).await;
    assert_ne!(first, second);
    let (status, _) = api(&sb, &second, "/employees", "application/json").await;
    assert_eq!(status, 200);

    // The admin switch expires tokens at once, for tests of long-running syncs.
    sb.expire_sage_tokens();
    let (status, _) = api(&sb, &second, "/employees", "application/json").await;
    assert_eq!(status, 401);
    sb.shutdown().await;
}
