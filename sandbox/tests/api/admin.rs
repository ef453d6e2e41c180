//! The `/_sandbox/` routes a separate test process uses while the engine runs elsewhere.

use roster_sandbox::{Faults, Person, Stats, Vendor};
use serde_json::{Value, json};

use crate::brex::Brex;
use crate::{client, config, parts, start};

#[tokio::test]
async fn admin_routes_over_http() {
    let sb = start(config()).await;
    let http = client();
    let brex = Brex::new(&sb);
    let _ = brex.get("/v2/users/me").await;

    // Any of the three servers answers for the whole sandbox, without auth.
    for vendor in Vendor::ALL {
        let base = sb.base_url(vendor);
        let r = http.get(format!("{base}/_sandbox/stats")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let stats: Stats = r.json().await.unwrap();
        assert_eq!(stats.brex.requests, 1);
        assert_eq!(stats.route(Vendor::Brex, "GET /v2/users/me"), 1);
    }
    assert_eq!(sb.stats().total_requests(), 1, "admin calls are not counted");

    let base = sb.base_url(Vendor::Sage);
    let r =
        http.put(format!("{base}/_sandbox/faults?vendor=brex")).json(&json!({"error_500": 1.0})).send().await.unwrap();
    let (status, all, _) = parts(r).await;
    assert_eq!(status, 200);
    assert_eq!(all["brex"]["error_500"], 1.0);
    assert_eq!(all["sage"]["error_500"], 0.0);
    assert_eq!(brex.get("/v2/users/me").await.0, 500);

    let r = http.put(format!("{base}/_sandbox/faults")).json(&Faults::default()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(brex.get("/v2/users/me").await.0, 200);
    let r = http.put(format!("{base}/_sandbox/faults")).body("{oops").send().await.unwrap();
    assert_eq!(r.status(), 400);

    let r = http.delete(format!("{base}/_sandbox/stats")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(sb.stats(), Stats::default());

    let people: Vec<Person> = http.get(format!("{base}/_sandbox/people")).send().await.unwrap().json().await.unwrap();
    assert_eq!(people, sb.people());

    let info: Value = http.get(format!("{base}/_sandbox/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["brex"]["token"], "sandbox-brex-token");
    assert_eq!(info["expensify"]["url"], sb.expensify_url().as_str());

    // Invited users can be made to accept their invites.
    let (_, user) = brex
        .post("/v2/users", &json!({"first_name": "New", "last_name": "Hire", "email": "new.hire@acme.test"}), None)
        .await;
    let r = http.post(format!("{base}/_sandbox/brex/accept-invites")).send().await.unwrap();
    let (_, body, _) = parts(r).await;
    assert_eq!(body["activated"], 1);
    let (_, after) = brex.get(&format!("/v2/users/{}", user["id"].as_str().unwrap())).await;
    assert_eq!(after["status"], "ACTIVE");
    sb.shutdown().await;
}
