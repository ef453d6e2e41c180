//! Fake Sage People: a Salesforce-style OAuth token endpoint plus the Sage People API v4
//! employees endpoints (connectors.md §3A and the embedded spec). Tokens expire; paging is by
//! `marker` (the last id seen), sorted by id, and an exhausted list answers 204.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Ctx, empty, finish, form_value, json_response, lock, parse_form};
use crate::people::Person;
use crate::rng::Rng;
use crate::{SAGE_API_BASE, SAGE_TOKEN_PATH};

pub(crate) const API_VERSION: &str = "4.8";

pub(crate) struct Store {
    tokens: HashMap<String, Instant>,
    rng: Rng,
    org_id: String,
    user_id: String,
}

impl Store {
    pub(crate) fn new(seed: u64) -> Store {
        let mut rng = Rng::new(seed ^ 0x5a6e_0000);
        let org_id = format!("00D{}", rng.upper_hex(12));
        let user_id = format!("005{}", rng.upper_hex(12));
        Store { tokens: HashMap::new(), rng, org_id, user_id }
    }

    pub(crate) fn expire_all(&mut self) {
        self.tokens.clear();
    }

    pub(crate) fn live_tokens(&self) -> Vec<String> {
        self.tokens.keys().cloned().collect()
    }
}

pub(crate) fn router(ctx: Ctx) -> Router {
    let api = Router::new()
        .route(SAGE_TOKEN_PATH, post(token))
        .route(&format!("{SAGE_API_BASE}/employees"), get(employees))
        .route(&format!("{SAGE_API_BASE}/employees/{{id}}"), get(employee))
        .fallback(not_found);
    finish(api, ctx)
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!([{"errorCode": "NOT_FOUND", "message": "Could not find a match for URL"}]),
    )
}

fn oauth_error(error: &str, description: &str) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!({"error": error, "error_description": description}))
}

async fn token(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let pairs = parse_form(&String::from_utf8_lossy(&body));
    let field = |k: &str| form_value(&pairs, k);
    let c = &ctx.shared.config;
    let grant = field("grant_type");
    if !matches!(grant, Some("client_credentials" | "password")) {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    if field("client_id") != Some(c.sage_client_id.as_str()) {
        return oauth_error("invalid_client", "client identifier invalid");
    }
    if field("client_secret") != Some(c.sage_client_secret.as_str()) {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    if grant == Some("password")
        && (field("username") != Some(c.sage_username.as_str()) || field("password") != Some(c.sage_password.as_str()))
    {
        return oauth_error("invalid_grant", "authentication failure");
    }

    let instance = ctx.shared.urls.sage.clone();
    let issued_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()).to_string();
    let (access_token, id) = {
        let mut st = lock(&ctx.shared.sage);
        let secret = st.rng.lower_alnum(40);
        let access_token = format!("{}!{}", st.org_id, secret);
        st.tokens.insert(access_token.clone(), Instant::now() + c.sage_token_ttl);
        let id = format!("{instance}/id/{}/{}", st.org_id, st.user_id);
        (access_token, id)
    };
    let mut mac = Sha256::new();
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    mac.update(c.sage_client_secret.as_bytes());
    let signature = STANDARD.encode(mac.finalize());
    ctx.shared.stats().sage_tokens_issued += 1;
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "instance_url": instance,
            "id": id,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
        }),
    )
}

fn api_error(status: StatusCode, category: &str, code: &str, message: &str) -> Response {
    json_response(status, &json!({"error": {"code": category, "message": message, "innererror": {"code": code}}}))
}

fn bad_request(code: &str, message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, "REQUEST_ERROR", code, message)
}

/// Session and Accept checks shared by the API routes; `Some` is the rejection. Salesforce
/// rejects the session before the Sage package sees the request, so 401 wins over 406.
fn gate(ctx: &Ctx, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let live =
        token.is_some_and(|t| lock(&ctx.shared.sage).tokens.get(&t).is_some_and(|expires| Instant::now() < *expires));
    if !live {
        return Some(json_response(
            StatusCode::UNAUTHORIZED,
            &json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
        ));
    }
    let accepts_json = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',')
            .any(|range| range.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")))
    });
    if !accepts_json {
        return Some(api_error(
            StatusCode::NOT_ACCEPTABLE,
            "REQUEST_ERROR",
            "INVALID_ACCEPT_HEADER",
            "The Accept header must be application/json",
        ));
    }
    None
}

fn employment_name(p: &Person, index: usize) -> String {
    format!("{}.{:02} #{}", p.start_date.year(), p.start_date.month(), index + 1)
}

/// The spec's Employee object.
fn employee_json(p: &Person, index: usize) -> Value {
    let w = &p.work_location;
    json!({
        "id": p.sage_id,
        "hrDepartment": p.department,
        "fullName": p.full_name,
        "firstName": p.first_name,
        "lastName": p.last_name,
        "emailAddress": p.email,
        "currentEmployment": {
            "startDate": p.start_date.to_string(),
            "name": employment_name(p, index),
            "jobTitle": p.job_title,
            "endDate": p.end_date.map(|d| d.to_string()),
            "active": p.active,
        },
        "workAddress": {
            "name": w.name,
            "line1": w.line1,
            "line2": w.line2,
            "line3": w.line3,
            "city": w.city,
            "region": w.region,
            "postalCode": w.postal_code,
            "country": w.country,
        },
        "additionalFields": [
            {"name": "Employee Number", "value": p.employee_id, "source": "fHCM2__Unique_Id__c"},
            {"name": "Manager Email", "value": p.manager_email, "source": "fHCM2__Manager_User__r.Email"},
        ],
    })
}

async fn employee(State(ctx): State<Ctx>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&ctx, &headers) {
        return r;
    }
    let people = &ctx.shared.people;
    match people.binary_search_by(|p| p.sage_id.as_str().cmp(id.as_str())) {
        Ok(i) => json_response(StatusCode::OK, &json!({"data": employee_json(&people[i], i), "version": API_VERSION})),
        Err(_) => {
            api_error(StatusCode::NOT_FOUND, "REQUEST_ERROR", "INVALID_PARAMETER", &format!("No employee with id {id}"))
        }
    }
}

async fn employees(State(ctx): State<Ctx>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&ctx, &headers) {
        return r;
    }
    let params = parse_form(query.as_deref().unwrap_or(""));
    if let Some((k, _)) = params.iter().find(|(k, _)| k != "marker" && k != "$filter") {
        return bad_request(
            "INVALID_QUERY_STRING",
            &format!("Unknown query parameter '{k}'; supported: marker, $filter"),
        );
    }
    let filter = match form_value(&params, "$filter").filter(|f| !f.trim().is_empty()) {
        None => Vec::new(),
        Some(text) => match parse_filter(text) {
            Ok(f) => f,
            Err((code, message)) => return bad_request(code, &message),
        },
    };
    let people = &ctx.shared.people;
    let start = match form_value(&params, "marker").filter(|m| !m.is_empty()) {
        None => 0,
        Some(marker) => match people.binary_search_by(|p| p.sage_id.as_str().cmp(marker)) {
            Ok(i) => i + 1,
            Err(_) => {
                return bad_request("INVALID_MARKER", &format!("Invalid marker '{marker}'"));
            }
        },
    };
    let page_size = ctx.shared.config.page_size_sage;
    let data: Vec<Value> = people[start..]
        .iter()
        .enumerate()
        .filter(|(offset, p)| filter.iter().all(|c| c.matches(p, start + offset)))
        .take(page_size)
        .map(|(offset, p)| employee_json(p, start + offset))
        .collect();
    if data.is_empty() {
        return empty(StatusCode::NO_CONTENT);
    }
    json_response(StatusCode::OK, &json!({"data": data, "version": API_VERSION}))
}

// ---- $filter: `field op literal [and field op literal ...]` ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone)]
struct Cond {
    field: &'static str,
    op: Op,
    lit: Lit,
}

const BOOL_FIELDS: &[&str] = &["currentEmployment.active"];
const STRING_FIELDS: &[&str] = &[
    "id",
    "hrDepartment",
    "fullName",
    "firstName",
    "lastName",
    "emailAddress",
    "currentEmployment.startDate",
    "currentEmployment.endDate",
    "currentEmployment.name",
    "currentEmployment.jobTitle",
    "workAddress.name",
    "workAddress.line1",
    "workAddress.line2",
    "workAddress.line3",
    "workAddress.city",
    "workAddress.region",
    "workAddress.postalCode",
    "workAddress.country",
];

type FilterError = (&'static str, String);

fn tokenize(text: &str) -> Result<Vec<String>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::from("'");
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    Some('\'') => break,
                    Some(ch) => s.push(ch),
                    None => {
                        return Err(("UNTERMINATED_LITERAL", "Unterminated string literal".into()));
                    }
                }
            }
            tokens.push(s);
        } else if c == '(' || c == ')' {
            return Err(("INVALID_FILTER", "Grouping with parentheses is not supported by the sandbox".into()));
        } else {
            let mut s = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '\'' || ch == '(' || ch == ')' {
                    break;
                }
                s.push(ch);
                chars.next();
            }
            tokens.push(s);
        }
    }
    Ok(tokens)
}

fn parse_filter(text: &str) -> Result<Vec<Cond>, FilterError> {
    let tokens = tokenize(text)?;
    let mut conds = Vec::new();
    let mut i = 0;
    loop {
        let (Some(field), Some(op), Some(lit)) = (tokens.get(i), tokens.get(i + 1), tokens.get(i + 2)) else {
            return Err(("SYNTAX_ERROR", format!("Expected 'field operator value' in filter '{text}'")));
        };
        let is_bool = BOOL_FIELDS.contains(&field.as_str());
        let field: &'static str = BOOL_FIELDS
            .iter()
            .chain(STRING_FIELDS)
            .find(|f| **f == field.as_str())
            .copied()
            .ok_or_else(|| ("UNKNOWN_IDENTIFIER", format!("Unknown field '{field}'")))?;
        let op = match op.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => {
                return Err(("INVALID_OPERATION", format!("Unsupported operator '{other}'")));
            }
        };
        let lit = if let Some(s) = lit.strip_prefix('\'') {
            Lit::Str(s.to_string())
        } else {
            match lit.as_str() {
                "true" => Lit::Bool(true),
                "false" => Lit::Bool(false),
                "null" => Lit::Null,
                // Dates are written bare: currentEmployment.startDate gt 2024-01-01
                d if crate::spec::is_date(d) => Lit::Str(d.to_string()),
                other => return Err(("SYNTAX_ERROR", format!("Cannot read value '{other}'"))),
            }
        };
        let type_ok = match &lit {
            Lit::Null => matches!(op, Op::Eq | Op::Ne),
            Lit::Bool(_) => is_bool && matches!(op, Op::Eq | Op::Ne),
            Lit::Str(_) => !is_bool,
        };
        if !type_ok {
            return Err(("DATA_TYPE_MISMATCH", format!("Value does not fit field '{field}' or operator")));
        }
        conds.push(Cond { field, op, lit });
        match tokens.get(i + 3).map(|t| t.to_ascii_lowercase()) {
            None => return Ok(conds),
            Some(t) if t == "and" => i += 4,
            Some(t) if t == "or" => {
                return Err(("INVALID_FILTER", "'or' is not supported by the sandbox".into()));
            }
            Some(t) => return Err(("SYNTAX_ERROR", format!("Unexpected '{t}'"))),
        }
    }
}

impl Cond {
    fn matches(&self, p: &Person, index: usize) -> bool {
        if self.field == "currentEmployment.active" {
            let v = p.active;
            return match (&self.lit, self.op) {
                (Lit::Bool(b), Op::Eq) => v == *b,
                (Lit::Bool(b), Op::Ne) => v != *b,
                (Lit::Null, Op::Ne) => true,
                _ => false,
            };
        }
        let w = &p.work_location;
        let start = p.start_date.to_string();
        let end = p.end_date.map(|d| d.to_string());
        let employment = employment_name(p, index);
        let value: Option<&str> = match self.field {
            "id" => Some(&p.sage_id),
            "hrDepartment" => Some(&p.department),
            "fullName" => Some(&p.full_name),
            "firstName" => Some(&p.first_name),
            "lastName" => Some(&p.last_name),
            "emailAddress" => Some(&p.email),
            "currentEmployment.startDate" => Some(&start),
            "currentEmployment.endDate" => end.as_deref(),
            "currentEmployment.name" => Some(&employment),
            "currentEmployment.jobTitle" => Some(&p.job_title),
            "workAddress.name" => Some(&w.name),
            "workAddress.line1" => Some(&w.line1),
            "workAddress.line2" => w.line2.as_deref(),
            "workAddress.line3" => w.line3.as_deref(),
            "workAddress.city" => Some(&w.city),
            "workAddress.region" => Some(&w.region),
            "workAddress.postalCode" => Some(&w.postal_code),
            "workAddress.country" => Some(&w.country),
            _ => None,
        };
        match (&self.lit, value) {
            (Lit::Null, v) => (self.op == Op::Eq) == v.is_none(),
            (Lit::Str(_), None) => self.op == Op::Ne,
            (Lit::Str(s), Some(v)) => {
                // SOQL underneath compares text case-insensitively.
                let ord = v.to_lowercase().cmp(&s.to_lowercase());
                match self.op {
                    Op::Eq => ord.is_eq(),
                    Op::Ne => ord.is_ne(),
                    Op::Gt => ord.is_gt(),
                    Op::Ge => ord.is_ge(),
                    Op::Lt => ord.is_lt(),
                    Op::Le => ord.is_le(),
                }
            }
            (Lit::Bool(_), _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parsing() {
        let f = parse_filter("currentEmployment.active eq true and hrDepartment eq 'Sales'").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(parse_filter("nope eq 1").unwrap_err().0, "UNKNOWN_IDENTIFIER");
        assert_eq!(parse_filter("id eq").unwrap_err().0, "SYNTAX_ERROR");
        assert_eq!(parse_filter("id eq 'a' or id eq 'b'").unwrap_err().0, "INVALID_FILTER");
        assert_eq!(parse_filter("currentEmployment.active eq 'yes'").unwrap_err().0, "DATA_TYPE_MISMATCH");
        let f = parse_filter("lastName eq 'O''Brien'").unwrap();
        assert_eq!(f[0].lit, Lit::Str("O'Brien".into()));
        assert!(parse_filter("currentEmployment.startDate ge 2024-01-01").is_ok());
    }

    #[test]
    fn employee_json_fits_the_spec() {
        let people = crate::generate_people(4, 30, jiff::civil::date(2026, 1, 5));
        let spec = crate::spec::sage();
        let schema = spec.response_schema("GET", "/employees", 200).unwrap();
        let data: Vec<Value> = people.iter().enumerate().map(|(i, p)| employee_json(p, i)).collect();
        spec.validate(schema, &json!({"data": data, "version": API_VERSION})).unwrap();
    }
}
