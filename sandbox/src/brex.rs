//! Fake Brex Team API (`/v2/...`), following shared/reference/brex/NOTES.md and the embedded
//! spec: bearer auth (401 empty / 403 JSON), spec-validated bodies, cursor paging, per-token
//! Idempotency-Key replay, card state rules, per-token rate limit, `X-Brex-Trace-Id`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Ctx, Limiter, Shared, empty, finish, json_response, lock, parse_form, too_many_requests};
use crate::people::{CEO_TITLE, COMPANY_DOMAIN, DEPARTMENTS, EXECUTIVE, Lifecycle, Person};
use crate::rng::{Rng, mix};
use crate::stats::Vendor;
use crate::{SandboxConfig, spec};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
const MAX_ACTIVE_PHYSICAL_CARDS: usize = 10;

// ---- wire types (field names and nullability as in the spec) ----

#[derive(Debug, Clone, Serialize)]
struct User {
    id: String,
    first_name: String,
    last_name: String,
    email: String,
    status: String,
    manager_id: Option<String>,
    department_id: Option<String>,
    location_id: Option<String>,
    title_id: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
    remote_display_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Owner {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: String,
}

#[derive(Debug, Clone, Serialize)]
struct Money {
    amount: i64,
    currency: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct SpendControl {
    spend_limit: Money,
    spend_available: Money,
    spend_duration: Option<String>,
    reason: Option<String>,
    lock_after_date: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Address {
    line1: Option<String>,
    line2: Option<String>,
    city: Option<String>,
    state: Option<String>,
    country: Option<String>,
    postal_code: Option<String>,
    phone_number: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Expiration {
    month: i32,
    year: i32,
}

#[derive(Debug, Clone, Serialize)]
struct Card {
    id: String,
    owner: Owner,
    status: String,
    last_four: String,
    card_name: String,
    card_type: String,
    limit_type: String,
    spend_controls: Option<SpendControl>,
    billing_address: Address,
    mailing_address: Option<Address>,
    expiration_date: Expiration,
    metadata: Option<BTreeMap<String, String>>,
    budget_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Named {
    id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

struct Stored {
    fingerprint: String,
    status: StatusCode,
    body: Bytes,
}

pub(crate) struct Store {
    rng: Rng,
    users: Vec<User>,
    user_by_id: HashMap<String, usize>,
    user_by_email: HashMap<String, usize>,
    cards: Vec<Card>,
    card_by_id: HashMap<String, usize>,
    cards_by_user: HashMap<String, Vec<usize>>,
    departments: Vec<Named>,
    locations: Vec<Named>,
    titles: Vec<Named>,
    /// The token's own user (`/v2/users/me`).
    me: usize,
    /// (token, Idempotency-Key) -> first response.
    idempotency: HashMap<(String, String), Stored>,
    /// Canonical bodies of applied card creates -> the key they came with.
    applied_creates: HashMap<String, Option<String>>,
    limiter: Limiter,
    today: jiff::civil::Date,
}

fn company_billing_address() -> Address {
    Address {
        line1: Some("500 Harbor View Street".into()),
        line2: Some("Floor 4".into()),
        city: Some("San Francisco".into()),
        state: Some("CA".into()),
        country: Some("US".into()),
        postal_code: Some("94105".into()),
        phone_number: Some("+14155550100".into()),
    }
}

fn mailing_address_of(p: &Person) -> Address {
    let w = &p.work_location;
    Address {
        line1: Some(w.line1.clone()),
        line2: w.line2.clone(),
        city: Some(w.city.clone()),
        state: Some(w.region.clone()),
        country: Some(w.country_code.clone()),
        postal_code: Some(w.postal_code.clone()),
        phone_number: None,
    }
}

const VENDOR_CARD_NAMES: &[&str] = &[
    "Software Subscriptions",
    "Travel",
    "Team Offsite",
    "Cloud Hosting",
    "Online Advertising",
    "Office Supplies",
    "Conference Tickets",
];
const DURATIONS: &[&str] = &["MONTHLY", "QUARTERLY", "YEARLY", "ONE_TIME"];

impl Store {
    pub(crate) fn generate(config: &SandboxConfig, people: &[Person]) -> Store {
        let mut rng = Rng::new(config.seed ^ 0xb7e8_0000);
        let mut st = Store {
            rng: Rng::new(config.seed ^ 0xb7e8_1111),
            users: Vec::new(),
            user_by_id: HashMap::new(),
            user_by_email: HashMap::new(),
            cards: Vec::new(),
            card_by_id: HashMap::new(),
            cards_by_user: HashMap::new(),
            departments: Vec::new(),
            locations: Vec::new(),
            titles: Vec::new(),
            me: 0,
            idempotency: HashMap::new(),
            applied_creates: HashMap::new(),
            limiter: Limiter::new(config.brex_rate_limit),
            today: config.today,
        };

        let mut dept_id = HashMap::new();
        for name in std::iter::once(EXECUTIVE).chain(DEPARTMENTS.iter().map(|d| d.0)) {
            let id = format!("cudept_{}", rng.lower_alnum(25));
            dept_id.insert(name.to_string(), id.clone());
            st.departments.push(Named { id, name: name.to_string(), description: Some(format!("{name} department")) });
        }
        let mut title_id = HashMap::new();
        for name in std::iter::once(CEO_TITLE).chain(DEPARTMENTS.iter().flat_map(|d| d.2.iter().copied())) {
            if title_id.contains_key(name) {
                continue;
            }
            let id = format!("cutitle_{}", rng.lower_alnum(25));
            title_id.insert(name.to_string(), id.clone());
            st.titles.push(Named { id, name: name.to_string(), description: None });
        }
        let mut location_id: HashMap<String, String> = HashMap::new();
        for p in people {
            let name = &p.work_location.name;
            if !location_id.contains_key(name) {
                let id = format!("culoc_{}", rng.lower_alnum(25));
                location_id.insert(name.clone(), id.clone());
                st.locations.push(Named {
                    id,
                    name: name.clone(),
                    description: Some(format!("{}, {}", p.work_location.city, p.work_location.country_code)),
                });
            }
        }

        // Everyone who has started (leavers included) is in Brex; starters are not yet.
        for p in people.iter().filter(|p| p.lifecycle != Lifecycle::Starter) {
            let manager_id =
                p.manager_email.as_deref().and_then(|m| st.user_by_email.get(m)).map(|&i| st.users[i].id.clone());
            let user = User {
                id: format!("cuuser_{}", rng.lower_alnum(25)),
                first_name: p.first_name.clone(),
                last_name: p.last_name.clone(),
                email: p.email.clone(),
                status: "ACTIVE".into(),
                manager_id,
                department_id: dept_id.get(&p.department).cloned(),
                location_id: location_id.get(&p.work_location.name).cloned(),
                title_id: title_id.get(&p.job_title).cloned(),
                metadata: None,
                remote_display_id: Some(p.employee_id.clone()),
            };
            let owner = user.id.clone();
            st.insert_user(user);
            let n_cards = 1 + rng.below(3);
            for j in 0..n_cards {
                let card = generated_card(&mut rng, &owner, p, j, config.today);
                st.insert_card(card);
            }
        }

        // A couple of regular users are suspended (never the token owner at index 0).
        let regular: Vec<usize> = people
            .iter()
            .filter(|p| p.lifecycle != Lifecycle::Starter)
            .enumerate()
            .filter(|(i, p)| *i > 0 && p.lifecycle == Lifecycle::Regular)
            .map(|(i, _)| i)
            .collect();
        let want = (regular.len() / 100).max(2).min(regular.len());
        let mut disabled = 0;
        while disabled < want {
            let i = regular[rng.below(regular.len() as u64) as usize];
            if st.users[i].status == "ACTIVE" {
                st.users[i].status = "DISABLED".into();
                disabled += 1;
            }
        }

        if st.users.is_empty() {
            // A company with nobody started still has the admin who created the token.
            st.insert_user(User {
                id: format!("cuuser_{}", rng.lower_alnum(25)),
                first_name: "Sandbox".into(),
                last_name: "Admin".into(),
                email: format!("admin@{COMPANY_DOMAIN}"),
                status: "ACTIVE".into(),
                manager_id: None,
                department_id: None,
                location_id: None,
                title_id: None,
                metadata: None,
                remote_display_id: None,
            });
        }
        st
    }

    fn insert_user(&mut self, user: User) {
        let i = self.users.len();
        self.user_by_id.insert(user.id.clone(), i);
        self.user_by_email.insert(user.email.to_ascii_lowercase(), i);
        self.users.push(user);
    }

    fn insert_card(&mut self, card: Card) {
        let i = self.cards.len();
        self.card_by_id.insert(card.id.clone(), i);
        self.cards_by_user.entry(card.owner.user_id.clone()).or_default().push(i);
        self.cards.push(card);
    }

    pub(crate) fn accept_invites(&mut self) -> usize {
        let mut n = 0;
        for u in self.users.iter_mut().filter(|u| u.status == "INVITED") {
            u.status = "ACTIVE".into();
            n += 1;
        }
        n
    }

    fn user(&self, id: &str) -> Result<usize, ApiError> {
        self.user_by_id.get(id).copied().ok_or_else(|| ApiError::not_found("USER_NOT_FOUND"))
    }

    fn card(&self, id: &str) -> Result<usize, ApiError> {
        self.card_by_id.get(id).copied().ok_or_else(|| ApiError::not_found("CARD_NOT_FOUND"))
    }
}

fn generated_card(rng: &mut Rng, owner: &str, p: &Person, j: u64, today: jiff::civil::Date) -> Card {
    let corporate = j == 0 || rng.chance(0.3);
    let (card_type, limit_type, card_name, spend_controls) = if corporate {
        let physical = j == 0 && rng.chance(0.7);
        (
            if physical { "PHYSICAL" } else { "VIRTUAL" },
            "USER",
            if physical { "Corporate Card".to_string() } else { "Online Purchases".to_string() },
            None,
        )
    } else {
        let limit = 100 * rng.range_i64(5, 200) * 100;
        let spent = rng.range_i64(0, limit / 100) * 100;
        (
            "VIRTUAL",
            "CARD",
            rng.pick(VENDOR_CARD_NAMES).to_string(),
            Some(SpendControl {
                spend_limit: Money { amount: limit, currency: Some("USD".into()) },
                spend_available: Money { amount: limit - spent, currency: Some("USD".into()) },
                spend_duration: Some(rng.pick(DURATIONS).to_string()),
                reason: None,
                lock_after_date: None,
            }),
        )
    };
    let roll = rng.below(100);
    let status = match roll {
        0..=6 => "LOCKED",
        7..=14 => "TERMINATED",
        15..=17 if card_type == "PHYSICAL" => "SHIPPED",
        _ => "ACTIVE",
    };
    Card {
        id: format!("ncard_{}", rng.lower_alnum(25)),
        owner: Owner { kind: "USER", user_id: owner.to_string() },
        status: status.into(),
        last_four: rng.digits(4),
        card_name,
        card_type: card_type.into(),
        limit_type: limit_type.into(),
        spend_controls,
        billing_address: company_billing_address(),
        mailing_address: (card_type == "PHYSICAL").then(|| mailing_address_of(p)),
        expiration_date: Expiration {
            month: rng.range_i64(1, 12) as i32,
            year: i32::from(today.year()) + rng.range_i64(1, 4) as i32,
        },
        metadata: None,
        budget_id: None,
    }
}

// ---- errors ----

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    code: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, kind: "BAD_REQUEST", message: message.into(), code: None }
    }

    fn invalid(field: &str, why: &str) -> ApiError {
        ApiError::bad(format!("{field} is invalid: {why}"))
    }

    fn not_found(code: &'static str) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, kind: "NOT_FOUND", message: "Not Found".into(), code: Some(code) }
    }

    fn body(&self) -> Value {
        let mut v = json!({"type": self.kind, "message": self.message});
        if let Some(code) = self.code {
            v["code"] = json!(code);
        }
        v
    }
}

type ApiResult = Result<Value, ApiError>;

fn render(result: ApiResult) -> (StatusCode, Bytes) {
    match result {
        Ok(v) => (StatusCode::OK, Bytes::from(v.to_string())),
        Err(e) => (e.status, Bytes::from(e.body().to_string())),
    }
}

fn respond(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn reply(result: ApiResult) -> Response {
    let (status, body) = render(result);
    respond(status, body)
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

// ---- middleware ----

#[derive(Debug, Clone)]
pub(crate) struct Token(String);

async fn auth(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    // No credentials at all: 401 with an empty body, as measured against the real API.
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return empty(StatusCode::UNAUTHORIZED);
    };
    let presented = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let expected = ctx.shared.config.brex_token.as_str();
    if presented != Some(expected) {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"type": "FORBIDDEN", "message": "Invalid or Revoked Token"}),
        );
    }
    let limited = lock(&ctx.shared.brex).limiter.check(expected);
    if let Err(wait) = limited {
        ctx.shared.stats().brex.rate_limited += 1;
        return too_many_requests(Vendor::Brex, wait);
    }
    req.extensions_mut().insert(Token(expected.to_string()));
    next.run(req).await
}

static TRACE_COUNTER: AtomicU64 = AtomicU64::new(1);

async fn trace_id(req: Request, next: Next) -> Response {
    let n = TRACE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut response = next.run(req).await;
    let id = format!("{:016x}{:016x}", mix(n), mix(n ^ 0x7ace));
    // An echoing answer (`Faults::echo_credentials`) already carries its own.
    if response.headers().contains_key("x-brex-trace-id") {
        return response;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-brex-trace-id", v);
    }
    response
}

async fn not_found() -> Response {
    reply(Err(ApiError { status: StatusCode::NOT_FOUND, kind: "NOT_FOUND", message: "Not Found".into(), code: None }))
}

async fn method_not_allowed() -> Response {
    reply(Err(ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        kind: "METHOD_NOT_ALLOWED",
        message: "Method Not Allowed".into(),
        code: None,
    }))
}

pub(crate) fn router(ctx: Ctx) -> Router {
    let api = Router::new()
        .route("/v2/users", get(list_users).post(create_user))
        .route("/v2/users/me", get(get_me))
        .route("/v2/users/{id}", get(get_user).put(update_user))
        .route("/v2/cards", get(list_cards).post(create_card))
        .route("/v2/cards/{id}", get(get_card).put(update_card))
        .route("/v2/cards/{id}/lock", post(lock_card))
        .route("/v2/cards/{id}/unlock", post(unlock_card))
        .route("/v2/cards/{id}/terminate", post(terminate_card))
        .route("/v2/departments", get(list_departments))
        .route("/v2/departments/{id}", get(get_department))
        .route("/v2/locations", get(list_locations))
        .route("/v2/locations/{id}", get(get_location))
        .route("/v2/titles", get(list_titles))
        .route("/v2/titles/{id}", get(get_title))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(ctx.clone(), auth));
    finish(api, ctx).layer(from_fn(trace_id))
}

// ---- paging ----

struct PageParams {
    offset: usize,
    limit: usize,
    params: Vec<(String, String)>,
}

impl PageParams {
    /// A filter's value; empty counts as absent.
    fn filter(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }
}

fn encode_cursor(kind: &str, offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{offset}"))
}

fn page_params(kind: &str, query: Option<String>) -> Result<PageParams, ApiError> {
    let params = parse_form(query.as_deref().unwrap_or(""));
    let get = |name: &str| params.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.clone());
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
            Ok(_) => return Err(ApiError::invalid("limit", "must be between 1 and 1000")),
            Err(_) => return Err(ApiError::invalid("limit", "must be an integer")),
        },
    };
    let offset = match get("cursor") {
        None => 0,
        Some(raw) => URL_SAFE_NO_PAD
            .decode(raw.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                let (k, n) = s.split_once(':')?;
                (k == kind).then_some(())?;
                n.parse::<usize>().ok()
            })
            .ok_or_else(|| ApiError::invalid("cursor", "not a cursor returned by this endpoint"))?,
    };
    Ok(PageParams { offset, limit, params })
}

fn page(kind: &str, p: &PageParams, total: usize, item: impl Fn(usize) -> Value) -> ApiResult {
    let start = p.offset.min(total);
    let end = start.saturating_add(p.limit).min(total);
    let items: Vec<Value> = (start..end).map(item).collect();
    let next = (end < total).then(|| encode_cursor(kind, end));
    Ok(json!({"next_cursor": next, "items": items}))
}

// ---- reads ----

async fn list_users(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Response {
    let st = lock(&ctx.shared.brex);
    reply(page_params("users", q).and_then(|p| {
        let email = p.filter("email").map(str::to_ascii_lowercase);
        let remote = p.filter("remote_display_id");
        if email.is_none() && remote.is_none() {
            return page("users", &p, st.users.len(), |i| to_json(&st.users[i]));
        }
        let hits: Vec<usize> = match &email {
            Some(e) => st.user_by_email.get(e).copied().into_iter().collect(),
            None => (0..st.users.len()).collect(),
        };
        let hits: Vec<usize> = hits
            .into_iter()
            .filter(|&i| remote.is_none_or(|r| st.users[i].remote_display_id.as_deref() == Some(r)))
            .collect();
        page("users", &p, hits.len(), |i| to_json(&st.users[hits[i]]))
    }))
}

async fn get_me(State(ctx): State<Ctx>) -> Response {
    let st = lock(&ctx.shared.brex);
    reply(Ok(to_json(&st.users[st.me])))
}

async fn get_user(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    let st = lock(&ctx.shared.brex);
    reply(st.user(&id).map(|i| to_json(&st.users[i])))
}

async fn list_cards(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Response {
    let st = lock(&ctx.shared.brex);
    reply(page_params("cards", q).and_then(|p| match p.filter("user_id") {
        None => page("cards", &p, st.cards.len(), |i| to_json(&st.cards[i])),
        Some(user) => {
            let empty = Vec::new();
            let hits = st.cards_by_user.get(user).unwrap_or(&empty);
            page("cards", &p, hits.len(), |i| to_json(&st.cards[hits[i]]))
        }
    }))
}

async fn get_card(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    let st = lock(&ctx.shared.brex);
    reply(st.card(&id).map(|i| to_json(&st.cards[i])))
}

fn list_named(kind: &str, items: &[Named], q: Option<String>) -> Response {
    reply(page_params(kind, q).and_then(|p| {
        let hits: Vec<usize> = match p.filter("name") {
            None => (0..items.len()).collect(),
            Some(name) => (0..items.len()).filter(|&i| items[i].name.eq_ignore_ascii_case(name)).collect(),
        };
        page(kind, &p, hits.len(), |i| to_json(&items[hits[i]]))
    }))
}

fn get_named(items: &[Named], id: &str, code: &'static str) -> Response {
    reply(items.iter().find(|n| n.id == id).map(to_json).ok_or_else(|| ApiError::not_found(code)))
}

async fn list_departments(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Response {
    list_named("departments", &lock(&ctx.shared.brex).departments, q)
}

async fn get_department(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    get_named(&lock(&ctx.shared.brex).departments, &id, "DEPARTMENT_NOT_FOUND")
}

async fn list_locations(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Response {
    list_named("locations", &lock(&ctx.shared.brex).locations, q)
}

async fn get_location(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    get_named(&lock(&ctx.shared.brex).locations, &id, "LOCATION_NOT_FOUND")
}

async fn list_titles(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Response {
    list_named("titles", &lock(&ctx.shared.brex).titles, q)
}

async fn get_title(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    get_named(&lock(&ctx.shared.brex).titles, &id, "TITLE_NOT_FOUND")
}

// ---- writes ----

/// What a write operation gets besides the state.
struct Op<'a> {
    shared: &'a Shared,
    key: Option<&'a str>,
    body: Value,
}

/// Parses and validates a body against the operation's request schema in the spec, then checks
/// Brex's "free text is ASCII only" rule. Operations without a declared body ignore it.
fn validated_body(method: &Method, template: &str, body: &[u8]) -> ApiResult {
    let spec = spec::brex();
    let Some(schema) = spec.request_schema(method.as_str(), template) else {
        return Ok(Value::Null);
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("A JSON request body is required"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("Malformed JSON request body: {e}")))?;
    if let Err(violations) = spec.validate(schema, &value) {
        return Err(ApiError::bad(violations[0].to_string()));
    }
    if let Some(path) = non_ascii_path(&value, &mut String::new()) {
        return Err(ApiError::invalid(&path, "only ASCII characters are allowed"));
    }
    Ok(value)
}

fn non_ascii_path(v: &Value, path: &mut String) -> Option<String> {
    match v {
        Value::String(s) if !s.is_ascii() => Some(if path.is_empty() { "body".into() } else { path.clone() }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            let found = if k.is_ascii() { non_ascii_path(v, path) } else { Some(path.clone()) };
            path.truncate(len);
            found
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = non_ascii_path(v, path);
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

/// Sorted-key JSON, so two bodies that differ only in key order compare equal.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> =
                keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k]))).collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The shared POST/PUT path: Idempotency-Key handling, body validation, then the operation,
/// all under one lock so concurrent retries with one key apply at most once.
fn mutate(
    ctx: &Ctx,
    w: &WriteReq,
    template: &str,
    key_required: bool,
    op: impl FnOnce(&mut Store, Op<'_>) -> ApiResult,
) -> Response {
    let (token, method, body) = (&w.token, &w.method, &w.body);
    let key = w.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty());
    if key.is_none() && key_required {
        return reply(Err(ApiError::bad("Idempotency-Key header is required for this request")));
    }
    let mut fp = Sha256::new();
    fp.update(method.as_str());
    fp.update(b" ");
    fp.update(w.uri.path());
    fp.update(b"\n");
    fp.update(body);
    let fingerprint = format!("{:x}", fp.finalize());

    let shared = &ctx.shared;
    let mut st = lock(&shared.brex);
    if let Some(k) = key
        && let Some(stored) = st.idempotency.get(&(token.0.clone(), k.to_string()))
    {
        let mut stats = shared.stats();
        stats.idempotent_replays += 1;
        if stored.fingerprint != fingerprint {
            stats.idempotency_key_conflicts += 1;
        }
        return respond(stored.status, stored.body.clone());
    }
    let result = validated_body(method, template, body).and_then(|value| op(&mut st, Op { shared, key, body: value }));
    let (status, bytes) = render(result);
    if let Some(k) = key {
        st.idempotency.insert((token.0.clone(), k.to_string()), Stored { fingerprint, status, body: bytes.clone() });
    }
    respond(status, bytes)
}

fn opt_str(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_string)
}

fn check_metadata(
    field: &str,
    v: Option<&Value>,
    max_keys: usize,
) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(map) = v.and_then(Value::as_object) else {
        return Ok(None);
    };
    if map.len() > max_keys {
        return Err(ApiError::invalid(field, &format!("at most {max_keys} entries are allowed")));
    }
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if k.chars().count() > 40 {
            return Err(ApiError::invalid(field, "keys cannot exceed 40 characters"));
        }
        let s = v.as_str().unwrap_or_default();
        if s.chars().count() > 500 {
            return Err(ApiError::invalid(field, "values cannot exceed 500 characters"));
        }
        out.insert(k.clone(), s.to_string());
    }
    Ok(Some(out))
}

impl Store {
    fn check_refs(&self, body: &Value) -> Result<(), ApiError> {
        let refs: [(&str, &[Named]); 3] =
            [("department_id", &self.departments), ("location_id", &self.locations), ("title_id", &self.titles)];
        for (field, items) in refs {
            if let Some(id) = body.get(field).and_then(Value::as_str)
                && !items.iter().any(|n| n.id == id)
            {
                return Err(ApiError::invalid(field, "no such id"));
            }
        }
        if let Some(id) = body.get("manager_id").and_then(Value::as_str)
            && !self.user_by_id.contains_key(id)
        {
            return Err(ApiError::invalid("manager_id", "no user with this id"));
        }
        Ok(())
    }

    fn create_user(&mut self, op: Op<'_>) -> ApiResult {
        let b = &op.body;
        let email = opt_str(b, "email").unwrap_or_default();
        if self.user_by_email.contains_key(&email.to_ascii_lowercase()) {
            return Err(ApiError::bad(format!("A user with email {email} already exists")));
        }
        self.check_refs(b)?;
        let metadata = check_metadata("metadata", b.get("metadata"), 100)?;
        let user = User {
            id: format!("cuuser_{}", self.rng.lower_alnum(25)),
            first_name: opt_str(b, "first_name").unwrap_or_default(),
            last_name: opt_str(b, "last_name").unwrap_or_default(),
            email,
            status: "INVITED".into(),
            manager_id: opt_str(b, "manager_id"),
            department_id: opt_str(b, "department_id"),
            location_id: opt_str(b, "location_id"),
            title_id: opt_str(b, "title_id"),
            metadata,
            remote_display_id: None,
        };
        let out = to_json(&user);
        self.insert_user(user);
        op.shared.stats().side_effects.users_invited += 1;
        Ok(out)
    }

    fn update_user(&mut self, id: &str, op: Op<'_>) -> ApiResult {
        let i = self.user(id)?;
        let b = &op.body;
        self.check_refs(b)?;
        if opt_str(b, "manager_id").as_deref() == Some(id) {
            return Err(ApiError::invalid("manager_id", "a user cannot be their own manager"));
        }
        let metadata = check_metadata("metadata", b.get("metadata"), 100)?;
        let user = &mut self.users[i];
        if let Some(status) = opt_str(b, "status") {
            if !matches!(user.status.as_str(), "INVITED" | "ACTIVE" | "DISABLED") {
                return Err(ApiError::invalid(
                    "status",
                    &format!("cannot change the status of a {} user", user.status),
                ));
            }
            user.status = status;
        }
        // Absent or null leaves a field unchanged ("Any parameters not provided will be left
        // unchanged"); the spec gives no way to clear one.
        for (field, slot) in [
            ("manager_id", &mut user.manager_id),
            ("department_id", &mut user.department_id),
            ("location_id", &mut user.location_id),
            ("title_id", &mut user.title_id),
        ] {
            if let Some(v) = opt_str(b, field) {
                *slot = Some(v);
            }
        }
        if metadata.is_some() {
            user.metadata = metadata;
        }
        let out = to_json(&*user);
        op.shared.stats().side_effects.users_updated += 1;
        Ok(out)
    }

    fn create_card(&mut self, op: Op<'_>) -> ApiResult {
        let b = &op.body;
        let owner_id = b["owner"]["user_id"].as_str().unwrap_or_default().to_string();
        let Some(&owner) = self.user_by_id.get(&owner_id) else {
            return Err(ApiError::invalid("owner.user_id", "no user with this id"));
        };
        let owner_status = self.users[owner].status.as_str();
        if !matches!(owner_status, "ACTIVE" | "INVITED") {
            return Err(ApiError::invalid("owner.user_id", &format!("cannot issue a card to a {owner_status} user")));
        }
        let card_type = opt_str(b, "card_type").unwrap_or_default();
        let limit_type = opt_str(b, "limit_type").unwrap_or_default();
        let controls = b.get("spend_controls").filter(|v| !v.is_null());
        match (limit_type.as_str(), controls) {
            ("CARD", None) => {
                return Err(ApiError::invalid("spend_controls", "required when limit_type is CARD"));
            }
            ("USER", Some(_)) => {
                return Err(ApiError::invalid("spend_controls", "must be null when limit_type is USER"));
            }
            _ => {}
        }
        if limit_type == "CARD" && card_type != "VIRTUAL" {
            return Err(ApiError::invalid("card_type", "cards with limit_type CARD must be VIRTUAL"));
        }
        let mailing = b.get("mailing_address").filter(|v| !v.is_null());
        if card_type == "PHYSICAL" {
            let Some(addr) = mailing else {
                return Err(ApiError::invalid("mailing_address", "required for PHYSICAL cards"));
            };
            for line in ["line1", "line2"] {
                if addr.get(line).and_then(Value::as_str).is_some_and(|s| s.chars().count() >= 60) {
                    return Err(ApiError::invalid(&format!("mailing_address.{line}"), "must be under 60 characters"));
                }
            }
            let active_physical = self.cards_by_user.get(&owner_id).map_or(0, |cards| {
                cards
                    .iter()
                    .filter(|&&c| self.cards[c].card_type == "PHYSICAL" && self.cards[c].status != "TERMINATED")
                    .count()
            });
            if active_physical >= MAX_ACTIVE_PHYSICAL_CARDS {
                return Err(ApiError::invalid("card_type", "a user can have at most 10 active physical cards"));
            }
        }
        let spend_controls = match controls {
            None => None,
            Some(c) => {
                let limit = money(c.get("spend_limit"), "spend_controls.spend_limit")?;
                Some(SpendControl {
                    spend_available: limit.clone(),
                    spend_limit: limit,
                    spend_duration: opt_str(c, "spend_duration"),
                    reason: opt_str(c, "reason"),
                    lock_after_date: opt_str(c, "lock_after_date"),
                })
            }
        };
        let metadata = check_metadata("metadata", b.get("metadata"), 50)?;
        let physical = card_type == "PHYSICAL";
        let card = Card {
            id: format!("ncard_{}", self.rng.lower_alnum(25)),
            owner: Owner { kind: "USER", user_id: owner_id.clone() },
            status: if physical { "SHIPPED" } else { "ACTIVE" }.into(),
            last_four: self.rng.digits(4),
            card_name: opt_str(b, "card_name").unwrap_or_default(),
            card_type,
            limit_type,
            spend_controls,
            billing_address: company_billing_address(),
            mailing_address: mailing.map(|m| Address {
                line1: opt_str(m, "line1"),
                line2: opt_str(m, "line2"),
                city: opt_str(m, "city"),
                state: opt_str(m, "state"),
                country: opt_str(m, "country"),
                postal_code: opt_str(m, "postal_code"),
                phone_number: opt_str(m, "phone_number"),
            }),
            expiration_date: Expiration {
                month: i32::from(self.today.month()),
                year: i32::from(self.today.year()) + 3,
            },
            metadata,
            budget_id: None,
        };
        let out = to_json(&card);
        let owner_and_name = format!("{owner_id}/{}", card.card_name);
        self.insert_card(card);

        let body_key = canonical(b);
        let earlier = self.applied_creates.insert(body_key, op.key.map(str::to_string));
        let mut stats = op.shared.stats();
        stats.side_effects.cards_created += 1;
        if let Some(k) = op.key {
            *stats.cards_created_by_key.entry(k.to_string()).or_insert(0) += 1;
        }
        *stats.cards_created_by_owner_and_name.entry(owner_and_name).or_insert(0) += 1;
        if earlier.is_some() {
            stats.duplicate_side_effects += 1;
        }
        Ok(out)
    }

    fn update_card(&mut self, id: &str, op: Op<'_>) -> ApiResult {
        let i = self.card(id)?;
        let b = &op.body;
        let card = &self.cards[i];
        if card.status == "TERMINATED" {
            return Err(ApiError::bad("Card is terminated and cannot be updated"));
        }
        let metadata = check_metadata("metadata", b.get("metadata"), 50)?;
        let controls = b.get("spend_controls").filter(|v| !v.is_null());
        if controls.is_some() && card.limit_type != "CARD" {
            return Err(ApiError::invalid("spend_controls", "only cards with limit_type CARD have spend controls"));
        }
        let new_limit = match controls.and_then(|c| c.get("spend_limit")).filter(|v| !v.is_null()) {
            Some(m) => Some(money(Some(m), "spend_controls.spend_limit")?),
            None => None,
        };
        let card = &mut self.cards[i];
        if let (Some(c), Some(sc)) = (controls, card.spend_controls.as_mut()) {
            if let Some(limit) = new_limit {
                let spent = sc.spend_limit.amount - sc.spend_available.amount;
                sc.spend_available = Money { amount: (limit.amount - spent).max(0), currency: limit.currency.clone() };
                sc.spend_limit = limit;
            }
            for (field, slot) in [
                ("spend_duration", &mut sc.spend_duration),
                ("reason", &mut sc.reason),
                ("lock_after_date", &mut sc.lock_after_date),
            ] {
                if let Some(v) = opt_str(c, field) {
                    *slot = Some(v);
                }
            }
        }
        if metadata.is_some() {
            card.metadata = metadata;
        }
        let out = to_json(&*card);
        op.shared.stats().side_effects.cards_updated += 1;
        Ok(out)
    }

    fn change_card(&mut self, id: &str, op: Op<'_>, action: CardAction) -> ApiResult {
        let i = self.card(id)?;
        let card = &mut self.cards[i];
        let status = card.status.as_str();
        let verb = action.verb();
        if status == "TERMINATED" {
            return Err(ApiError::bad(if action == CardAction::Terminate {
                "Card is already terminated".to_string()
            } else {
                format!("Card is terminated and cannot be {verb}ed")
            }));
        }
        match action {
            CardAction::Lock if status == "LOCKED" => {
                return Err(ApiError::bad("Card is already locked"));
            }
            CardAction::Unlock if status != "LOCKED" => {
                return Err(ApiError::bad("Card is not locked"));
            }
            _ => {}
        }
        card.status = match action {
            CardAction::Lock => "LOCKED",
            CardAction::Unlock => "ACTIVE",
            CardAction::Terminate => "TERMINATED",
        }
        .into();
        let out = to_json(&*card);
        let mut stats = op.shared.stats();
        let fx = &mut stats.side_effects;
        match action {
            CardAction::Lock => fx.cards_locked += 1,
            CardAction::Unlock => fx.cards_unlocked += 1,
            CardAction::Terminate => fx.cards_terminated += 1,
        }
        Ok(out)
    }
}

fn money(v: Option<&Value>, field: &str) -> Result<Money, ApiError> {
    let v = v.ok_or_else(|| ApiError::invalid(field, "required field is missing"))?;
    let amount = v
        .get("amount")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::invalid(&format!("{field}.amount"), "required field is missing"))?;
    if amount < 0 {
        return Err(ApiError::invalid(&format!("{field}.amount"), "must not be negative"));
    }
    let currency = match v.get("currency").and_then(Value::as_str) {
        None => "USD".to_string(),
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => c.to_string(),
        Some(_) => {
            return Err(ApiError::invalid(&format!("{field}.currency"), "must be an ISO 4217 currency code"));
        }
    };
    Ok(Money { amount, currency: Some(currency) })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CardAction {
    Lock,
    Unlock,
    Terminate,
}

impl CardAction {
    fn verb(self) -> &'static str {
        match self {
            CardAction::Lock => "lock",
            CardAction::Unlock => "unlock",
            CardAction::Terminate => "terminat",
        }
    }
}

/// Everything a write handler needs from the request, in one extractor.
struct WriteReq {
    token: Token,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for WriteReq {
    type Rejection = Response;

    async fn from_request(req: Request, _state: &S) -> Result<WriteReq, Response> {
        let (parts, body) = req.into_parts();
        let token = parts.extensions.get::<Token>().cloned().ok_or_else(|| empty(StatusCode::UNAUTHORIZED))?;
        let body = axum::body::to_bytes(body, 2 << 20)
            .await
            .map_err(|_| reply(Err(ApiError::bad("Request body is too large"))))?;
        Ok(WriteReq { token, headers: parts.headers, method: parts.method, uri: parts.uri, body })
    }
}

async fn create_user(State(ctx): State<Ctx>, w: WriteReq) -> Response {
    mutate(&ctx, &w, "/v2/users", false, |st, op| st.create_user(op))
}

async fn update_user(State(ctx): State<Ctx>, Path(id): Path<String>, w: WriteReq) -> Response {
    mutate(&ctx, &w, "/v2/users/{id}", false, |st, op| st.update_user(&id, op))
}

async fn create_card(State(ctx): State<Ctx>, w: WriteReq) -> Response {
    mutate(&ctx, &w, "/v2/cards", true, |st, op| st.create_card(op))
}

async fn update_card(State(ctx): State<Ctx>, Path(id): Path<String>, w: WriteReq) -> Response {
    mutate(&ctx, &w, "/v2/cards/{id}", false, |st, op| st.update_card(&id, op))
}

async fn lock_card(State(ctx): State<Ctx>, Path(id): Path<String>, w: WriteReq) -> Response {
    mutate(&ctx, &w, "/v2/cards/{id}/lock", false, |st, op| st.change_card(&id, op, CardAction::Lock))
}

async fn unlock_card(State(ctx): State<Ctx>, Path(id): Path<String>, w: WriteReq) -> Response {
    mutate(&ctx, &w, "/v2/cards/{id}/unlock", false, |st, op| st.change_card(&id, op, CardAction::Unlock))
}

async fn terminate_card(State(ctx): State<Ctx>, Path(id): Path<String>, w: WriteReq) -> Response {
    mutate(&ctx, &w, "/v2/cards/{id}/terminate", false, |st, op| st.change_card(&id, op, CardAction::Terminate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_state_follows_the_company() {
        let config =
            SandboxConfig { seed: 11, people: 60, today: jiff::civil::date(2026, 11, 22), ..SandboxConfig::default() };
        let people = crate::generate_people(config.seed, config.people, config.today);
        let st = Store::generate(&config, &people);
        let started = people.iter().filter(|p| p.lifecycle != Lifecycle::Starter).count();
        assert_eq!(st.users.len(), started);
        assert!(st.users.iter().filter(|u| u.status == "DISABLED").count() >= 2);
        assert_eq!(st.users[st.me].email, people[0].email);
        for c in &st.cards {
            let card = to_json(c);
            spec::brex().validate_component("Card", &card).unwrap();
            if c.limit_type == "CARD" {
                assert_eq!(c.card_type, "VIRTUAL");
                assert!(c.spend_controls.is_some());
            } else {
                assert!(c.spend_controls.is_none());
            }
            assert_eq!(c.card_type == "PHYSICAL", c.mailing_address.is_some());
        }
        for u in &st.users {
            spec::brex().validate_component("UserResponse", &to_json(u)).unwrap();
            assert!(u.id.starts_with("cuuser_") && u.id.len() == 32);
        }
    }

    #[test]
    fn canonical_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,{"q":1,"p":2}]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[1,{"p":2,"q":1}],"y":2},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
    }
}
