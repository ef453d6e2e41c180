//! Fake Expensify Integration Server (connectors.md §1): one POST endpoint taking a form field
//! `requestJobDescription`; errors come back as HTTP 200 with `responseCode` in the body, except
//! rate limiting, which is a real HTTP 429.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};

use crate::common::{Ctx, Limiter, finish, form_value, json_response, lock, parse_form, too_many_requests};
use crate::people::{DEPARTMENTS, Lifecycle, Person};
use crate::rng::Rng;
use crate::stats::Vendor;
use crate::{EXPENSIFY_PATH, SandboxConfig};

#[derive(Debug, Clone, Serialize)]
struct Employee {
    email: String,
    role: &'static str,
    #[serde(rename = "submitsTo")]
    submits_to: String,
    #[serde(rename = "employeeID")]
    employee_id: String,
}

#[derive(Debug, Clone)]
struct Policy {
    id: String,
    name: String,
    owner: String,
    output_currency: &'static str,
    employees: Vec<Employee>,
}

pub(crate) struct Store {
    policies: Vec<Policy>,
    limiter: Mutex<Limiter>,
}

fn role_of(p: &Person, index: usize) -> &'static str {
    let head = DEPARTMENTS.iter().any(|d| d.2[0] == p.job_title);
    if index == 0 || head {
        "admin"
    } else if p.job_title == "Controller" {
        "auditor"
    } else {
        "user"
    }
}

impl Store {
    pub(crate) fn generate(config: &SandboxConfig, people: &[Person]) -> Store {
        let mut rng = Rng::new(config.seed ^ 0xe8e9_5f00);
        let owner = people.first().map(|p| p.email.clone()).unwrap_or_default();
        let employee = |(i, p): (usize, &Person)| Employee {
            email: p.email.clone(),
            role: role_of(p, i),
            // The CEO approves their own reports, as Expensify requires an approver.
            submits_to: p.manager_email.clone().unwrap_or_else(|| p.email.clone()),
            employee_id: p.employee_id.clone(),
        };
        let started = || people.iter().enumerate().filter(|(_, p)| p.lifecycle != Lifecycle::Starter);
        let split = people.len() >= 10 && started().any(|(_, p)| p.work_location.country_code == "GB");
        let mut policies = Vec::new();
        if split {
            for (name, currency, country) in [("Acme US", "USD", "US"), ("Acme UK", "GBP", "GB")] {
                // The owner is a member of every policy, so they appear twice, as in real accounts.
                let employees = started()
                    .filter(|(i, p)| *i == 0 || p.work_location.country_code == country)
                    .map(employee)
                    .collect();
                policies.push(Policy {
                    id: rng.upper_hex(16),
                    name: name.into(),
                    owner: owner.clone(),
                    output_currency: currency,
                    employees,
                });
            }
        } else {
            policies.push(Policy {
                id: rng.upper_hex(16),
                name: "Acme Corp".into(),
                owner,
                output_currency: "USD",
                employees: started().map(employee).collect(),
            });
        }
        Store { policies, limiter: Mutex::new(Limiter::new(config.expensify_rate_limit)) }
    }
}

pub(crate) fn router(ctx: Ctx) -> Router {
    let api = Router::new().route(EXPENSIFY_PATH, post(integration));
    finish(api, ctx)
}

/// Expensify's error shape; the HTTP status stays 200.
fn fail(code: u16, message: impl Into<String>) -> Response {
    json_response(StatusCode::OK, &json!({"responseMessage": message.into(), "responseCode": code}))
}

const JOB_TYPES: &[&str] = &["get", "create", "update", "download", "file", "reconciliation"];

async fn integration(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let pairs = parse_form(&text);
    let job: Option<Value> = form_value(&pairs, "requestJobDescription")
        .and_then(|raw| serde_json::from_str(raw).ok())
        .filter(Value::is_object);

    // The limit is per account, so key it by partnerUserID when one is readable.
    let account = job
        .as_ref()
        .and_then(|j| j.pointer("/credentials/partnerUserID"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let limited = lock(&ctx.shared.expensify.limiter).check(&account);
    if let Err(wait) = limited {
        ctx.shared.stats().expensify.rate_limited += 1;
        return too_many_requests(Vendor::Expensify, wait);
    }

    let Some(job) = job else {
        return fail(410, "Argument 'requestJobDescription' is missing or malformed");
    };
    let job_type = job.get("type").and_then(Value::as_str);
    if !job_type.is_some_and(|t| JOB_TYPES.contains(&t)) {
        return fail(410, "Argument 'type' is missing or malformed");
    }

    let config = &ctx.shared.config;
    let user_id = job.pointer("/credentials/partnerUserID").and_then(Value::as_str);
    let secret = job.pointer("/credentials/partnerUserSecret").and_then(Value::as_str);
    if user_id != Some(config.expensify_partner_user_id.as_str())
        || secret != Some(config.expensify_partner_user_secret.as_str())
    {
        return fail(401, format!("Not authorized to authenticate as user {}", user_id.unwrap_or("")));
    }

    if job_type != Some("get") {
        return fail(500, format!("Job type '{}' is not available in the Roster sandbox", job_type.unwrap_or("")));
    }
    let settings = job.get("inputSettings").cloned().unwrap_or(Value::Null);
    match settings.get("type").and_then(Value::as_str) {
        Some("policyList") => policy_list(&ctx.shared.expensify, &settings),
        Some("policy") => policy(&ctx.shared.expensify, &settings),
        _ => fail(410, "Argument 'inputSettings.type' is missing or malformed"),
    }
}

fn policy_list(store: &Store, settings: &Value) -> Response {
    let admin_only = settings.get("adminOnly").and_then(Value::as_bool).unwrap_or(false);
    let user_email = settings.get("userEmail").and_then(Value::as_str);
    let list: Vec<Value> = store
        .policies
        .iter()
        .filter_map(|p| {
            // The API account administers every policy; with userEmail, report that user's role.
            let role = match user_email {
                None => "admin",
                Some(email) => p.employees.iter().find(|e| e.email.eq_ignore_ascii_case(email))?.role,
            };
            if admin_only && role != "admin" {
                return None;
            }
            Some(json!({
                "outputCurrency": p.output_currency,
                "owner": p.owner,
                "role": role,
                "name": p.name,
                "id": p.id,
                "type": "corporate",
            }))
        })
        .collect();
    json_response(StatusCode::OK, &json!({"policyList": list, "responseCode": 200}))
}

fn policy(store: &Store, settings: &Value) -> Response {
    let Some(ids) = settings.get("policyIDList").and_then(Value::as_array) else {
        return fail(410, "Required parameter 'policyIDList' is missing");
    };
    let Some(fields) = settings.get("fields").and_then(Value::as_array) else {
        return fail(410, "Required parameter 'fields' is missing");
    };
    let mut wanted = Vec::new();
    for f in fields {
        match f.as_str() {
            Some(name @ ("employees" | "categories" | "tags" | "reportFields" | "tax")) => wanted.push(name),
            _ => return fail(410, format!("Invalid value for 'fields': {f}")),
        }
    }
    let mut info = serde_json::Map::new();
    for id in ids {
        let Some(id) = id.as_str() else {
            return fail(410, "Argument 'policyIDList' is malformed");
        };
        let Some(p) = store.policies.iter().find(|p| p.id == id) else {
            return fail(404, format!("Policy not found: {id}"));
        };
        let mut entry = BTreeMap::new();
        for field in &wanted {
            let value = match *field {
                "employees" => serde_json::to_value(&p.employees).unwrap_or(Value::Null),
                "tax" => json!({}),
                _ => json!([]),
            };
            entry.insert(field.to_string(), value);
        }
        info.insert(id.to_string(), json!(entry));
    }
    json_response(StatusCode::OK, &json!({"policyInfo": info, "responseCode": 200}))
}
