//! The eight Brex presets against the sandbox's fake Brex, through the example workflows
//! and the real `roster` binary: what Brex was sent, what Brex did, and what came back
//! onto the record.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use roster_sandbox::{Faults, Lifecycle, Vendor};
use serde_json::{Value, json};
use support::{Ran, SandboxHandle, TestHome, example};

const PRESETS: [&str; 8] = [
    "brex.activate_user",
    "brex.create_user_card",
    "brex.deactivate_user",
    "brex.get_user",
    "brex.invite_user",
    "brex.list_user_cards",
    "brex.lock_card",
    "brex.terminate_card",
];

/// A sandbox company with its Brex users synced into a fresh home, plus the starters (not in
/// Brex yet) imported as records, and the sandbox's counters reset.
struct Company {
    sb: SandboxHandle,
    home: TestHome,
}

/// Someone in the store: email, names, and Brex user id when they have one.
#[derive(Debug, Clone)]
struct Person {
    email: String,
    first: String,
    last: String,
    brex_id: String,
}

fn company() -> Company {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = TestHome::new();
    home.add_sandbox_brex(&sb);
    let integration = home
        .file("brex-users.json", r#"{"name": "brex", "connector": "brex", "credential": "brex", "sync_key": "email"}"#);
    home.roster(&["sync", integration.to_str().unwrap()]).ok();
    let starters: Vec<Value> = sb
        .sandbox
        .people()
        .into_iter()
        .filter(|p| p.lifecycle == Lifecycle::Starter)
        .map(|p| json!({"email": p.email, "first_name": p.first_name, "last_name": p.last_name}))
        .collect();
    assert!(!starters.is_empty(), "the company has starters to onboard");
    home.import(&Value::Array(starters));
    sb.sandbox.reset_stats();
    Company { sb, home }
}

impl Company {
    /// `roster run examples/NAME --user EMAIL --json`.
    fn run(&self, workflow: &str, email: &str) -> Ran {
        self.home.roster(&["run", &example(workflow), "--user", email, "--json"])
    }

    /// People whose record says `brex_status` is `status`, by email; never the token's owner
    /// (the first Brex user), so tests do not suspend the admin.
    fn with_status(&self, status: &str) -> Vec<Person> {
        let admin = self.sb.brex_get("/v2/users/me")["id"].as_str().unwrap().to_string();
        let mut out: Vec<Person> = self
            .home
            .records()
            .into_iter()
            .map(|r| r["fields"].clone())
            .filter(|f| f["brex_status"] == status && f["brex_user_id"] != admin.as_str())
            .map(|f| person(&f))
            .collect();
        out.sort_by(|a, b| a.email.cmp(&b.email));
        out
    }

    fn active(&self) -> Person {
        self.with_status("ACTIVE").remove(0)
    }

    /// A starter: in the store, not in Brex.
    fn starter(&self) -> Person {
        let mut starters: Vec<Person> = self
            .home
            .records()
            .into_iter()
            .map(|r| r["fields"].clone())
            .filter(|f| f.get("brex_user_id").is_none())
            .map(|f| person(&f))
            .collect();
        starters.sort_by(|a, b| a.email.cmp(&b.email));
        starters.remove(0)
    }

    /// Creates a card straight through the sandbox's API (not through Roster).
    fn card(&self, user_id: &str, body: Value) -> String {
        let mut body = body;
        body["owner"] = json!({"type": "USER", "user_id": user_id});
        let (status, card) = self.sb.brex("POST", "/v2/cards", Some(body));
        assert_eq!(status, 200, "{card}");
        card["id"].as_str().unwrap().to_string()
    }

    fn card_status(&self, card_id: &str) -> String {
        self.sb.brex_get(&format!("/v2/cards/{card_id}"))["status"].as_str().unwrap().to_string()
    }
}

fn person(fields: &Value) -> Person {
    let text = |k: &str| fields[k].as_str().unwrap_or_default().to_string();
    Person { email: text("email"), first: text("first_name"), last: text("last_name"), brex_id: text("brex_user_id") }
}

/// The finished journal entries of one block, in order.
fn steps<'a>(run: &'a Value, block: &str) -> Vec<&'a Value> {
    run["steps"].as_array().unwrap().iter().filter(|s| s["block"] == block && s["phase"] == "finished").collect()
}

/// The only finished entry of one block.
fn step<'a>(run: &'a Value, block: &str) -> &'a Value {
    let found = steps(run, block);
    assert_eq!(found.len(), 1, "one step for block {block}: {run:#}");
    found[0]
}

/// A request header as journaled.
fn header(step: &Value, name: &str) -> Option<String> {
    step["request"]["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap().to_string())
}

#[test]
fn get_activate_and_deactivate_send_brexs_requests_and_map_the_status_back() {
    let c = company();
    let p = c.active();
    let user_path = format!("/v2/users/{}", p.brex_id);

    // Someone suspended them in Brex behind Roster's back; get_user brings the news home.
    let (status, _) = c.sb.brex("PUT", &user_path, Some(json!({"status": "DISABLED"})));
    assert_eq!(status, 200);
    c.sb.sandbox.reset_stats();
    let run = c.run("brex/brex-get-user.json", &p.email).ok().json();
    let get = step(&run, "call");
    assert_eq!(get["request"]["method"], "GET");
    assert_eq!(get["request"]["url"], user_path);
    assert!(get["request"].get("body").is_none(), "a GET has no body");
    assert_eq!(c.sb.stats().route(Vendor::Brex, "GET /v2/users/{id}"), 1);
    assert_eq!(c.sb.stats().side_effects.total(), 0, "a get changes nothing");
    assert_eq!(c.home.fields(&p.email)["brex_status"], "DISABLED");

    // activate_user: PUT /v2/users/{id} {"status": "ACTIVE"} (no /status sub-path).
    let run = c.run("brex/brex-activate-user.json", &p.email).ok().json();
    let put = step(&run, "call");
    assert_eq!(put["request"]["method"], "PUT");
    assert_eq!(put["request"]["url"], user_path);
    assert_eq!(put["request"]["body"], json!({"status": "ACTIVE"}));
    assert!(header(put, "Idempotency-Key").is_some_and(|k| !k.is_empty()), "every PUT preset sends a key");
    assert_eq!(c.sb.brex_get(&user_path)["status"], "ACTIVE");
    let record = c.home.roster(&["records", "show", &p.email, "--json"]).ok().json();
    assert_eq!(record["fields"]["brex_status"], "ACTIVE");
    assert_eq!(record["provenance"]["brex_status"]["source"], "workflow:brex-activate-user");

    // deactivate_user: the same route with DISABLED.
    let run = c.run("brex/brex-deactivate-user.json", &p.email).ok().json();
    let put = step(&run, "call");
    assert_eq!(put["request"]["url"], user_path);
    assert_eq!(put["request"]["body"], json!({"status": "DISABLED"}));
    assert_eq!(c.sb.brex_get(&user_path)["status"], "DISABLED");
    assert_eq!(c.home.fields(&p.email)["brex_status"], "DISABLED");

    let stats = c.sb.stats();
    assert_eq!(stats.route(Vendor::Brex, "PUT /v2/users/{id}"), 2);
    assert_eq!(stats.side_effects.users_updated, 2);
    assert_eq!(stats.route(Vendor::Brex, "PUT (unmatched)") + stats.route(Vendor::Brex, "POST (unmatched)"), 0);
}

#[test]
fn invite_creates_an_invited_brex_user_and_keeps_the_new_id() {
    let c = company();
    let p = c.starter();
    let run = c.run("brex/brex-invite-user.json", &p.email).ok().json();
    let post = step(&run, "invite");
    assert_eq!(post["request"]["method"], "POST");
    assert_eq!(post["request"]["url"], "/v2/users");
    // Optional parameters left unset are left out, not sent as nulls.
    assert_eq!(
        post["request"]["body"],
        json!({"first_name": p.first, "last_name": p.last, "email": p.email, "metadata": {"source": "roster"}})
    );
    assert!(header(post, "Idempotency-Key").is_some());

    let fields = c.home.fields(&p.email);
    let id = fields["brex_user_id"].as_str().expect("the new Brex id is on the record");
    assert!(id.starts_with("cuuser_"), "{id}");
    assert_eq!(fields["brex_status"], "INVITED");
    let stats = c.sb.stats();
    assert_eq!(stats.route(Vendor::Brex, "POST /v2/users"), 1);
    assert_eq!(stats.side_effects.users_invited, 1);

    let user = c.sb.brex_get(&format!("/v2/users/{id}"));
    assert_eq!(user["email"], p.email);
    assert_eq!(user["first_name"], p.first);
    assert_eq!(user["last_name"], p.last);
    assert_eq!(user["status"], "INVITED");
    assert_eq!(user["metadata"], json!({"source": "roster"}));
}

#[test]
fn create_lock_and_terminate_a_card_and_brexs_4xx_message_is_surfaced() {
    let c = company();
    let p = c.active();
    let name = format!("{} {} expenses", p.first, p.last);

    let run = c.run("brex/brex-create-user-card.json", &p.email).ok().json();
    let post = step(&run, "create");
    assert_eq!(post["request"]["method"], "POST");
    assert_eq!(post["request"]["url"], "/v2/cards");
    assert_eq!(
        post["request"]["body"],
        json!({
            "owner": {"type": "USER", "user_id": p.brex_id},
            "card_name": name,
            "card_type": "VIRTUAL",
            "limit_type": "CARD",
            "spend_controls": {"spend_limit": {"amount": 50000, "currency": "USD"}, "spend_duration": "MONTHLY"}
        })
    );
    let key = header(post, "Idempotency-Key").expect("create card sends an Idempotency-Key");
    let card_id = c.home.fields(&p.email)["brex_user_card_id"].as_str().expect("the card id is mapped").to_string();
    assert!(card_id.starts_with("ncard_"), "{card_id}");
    let card = c.sb.brex_get(&format!("/v2/cards/{card_id}"));
    assert_eq!(card["owner"]["user_id"], p.brex_id.as_str());
    assert_eq!(card["card_name"], name.as_str());
    assert_eq!(card["status"], "ACTIVE");
    assert_eq!(card["spend_controls"]["spend_limit"]["amount"], 50000);
    assert_eq!(c.sb.stats().cards_created_by_key, BTreeMap::from([(key, 1)]));

    // lock_card and terminate_card act on the record's brex_user_card_id.
    let run = c.run("brex/brex-lock-card.json", &p.email).ok().json();
    let lock = step(&run, "lock");
    assert_eq!(lock["request"]["url"], format!("/v2/cards/{card_id}/lock"));
    assert_eq!(lock["request"]["body"], json!({"reason": "OTHER", "description": "Locked by Roster"}));
    assert_eq!(c.card_status(&card_id), "LOCKED");

    let run = c.run("brex/brex-terminate-card.json", &p.email).ok().json();
    let terminate = step(&run, "terminate");
    assert_eq!(terminate["request"]["url"], format!("/v2/cards/{card_id}/terminate"));
    assert_eq!(
        terminate["request"]["body"],
        json!({"reason": "DO_NOT_NEED_VIRTUAL_CARD", "description": "No longer needed"})
    );
    assert_eq!(c.card_status(&card_id), "TERMINATED");

    // Brex refuses to lock a terminated card; its own words reach the person.
    let run = c.run("brex/brex-lock-card.json", &p.email).code(1).json();
    assert_eq!(run["state"], "failed");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("brex answered 400: Card is terminated and cannot be locked"), "{error}");
    assert_eq!(step(&run, "lock")["status"], 400);
    let listed = c.home.roster(&["runs", "list", "--json"]).ok().json();
    assert!(listed[0]["error"].as_str().unwrap().contains("Card is terminated"), "{listed:#}");

    let stats = c.sb.stats();
    assert_eq!(stats.side_effects.cards_created, 1);
    assert_eq!(stats.side_effects.cards_locked, 1);
    assert_eq!(stats.side_effects.cards_terminated, 1);
    assert_eq!(stats.route(Vendor::Brex, "POST /v2/cards/{id}/lock"), 2);
    assert_eq!(stats.status(Vendor::Brex, 400), 1);
    assert_eq!(c.card_status(&card_id), "TERMINATED");
}

#[test]
fn list_user_cards_follows_every_page() {
    let c = company();
    let p = c.active();
    for n in 0..2 {
        c.card(&p.brex_id, json!({"card_name": format!("Extra {n}"), "card_type": "VIRTUAL", "limit_type": "USER"}));
    }
    let expected: BTreeSet<String> =
        c.sb.brex_cards(&p.brex_id).iter().map(|card| card["id"].as_str().unwrap().to_string()).collect();
    assert!(expected.len() >= 3, "{expected:?}");

    // A presets folder whose list_user_cards asks for one card a page.
    let dir = c.home.path().join("one-a-page");
    std::fs::create_dir_all(&dir).unwrap();
    let built_in =
        std::fs::read_to_string(format!("{}/presets/brex/list_user_cards.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut preset: Value = serde_json::from_str(&built_in).unwrap();
    preset["paginate"]["limit"] = json!(1);
    std::fs::write(dir.join("list_user_cards.json"), preset.to_string()).unwrap();

    c.sb.sandbox.reset_stats();
    let run = c
        .home
        .roster(&[
            "--presets",
            dir.to_str().unwrap(),
            "run",
            &example("brex/brex-list-user-cards.json"),
            "--user",
            &p.email,
            "--json",
        ])
        .ok()
        .json();
    let list = step(&run, "call");
    assert_eq!(list["request"]["url"], format!("/v2/cards?user_id={}", p.brex_id));
    let items = list["response"]["body"]["items"].as_array().expect("the step's response is {items: [...]}");
    let got: BTreeSet<String> = items.iter().map(|card| card["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, expected, "every card of every page, once each");
    assert_eq!(items.len(), expected.len());
    assert_eq!(list["response"]["pages"], expected.len());
    assert_eq!(c.sb.stats().route(Vendor::Brex, "GET /v2/cards"), expected.len() as u64);

    // The built-in preset gets them all in one page.
    c.sb.sandbox.reset_stats();
    let run = c.run("brex/brex-list-user-cards.json", &p.email).ok().json();
    assert_eq!(step(&run, "call")["response"]["body"]["items"].as_array().unwrap().len(), expected.len());
    assert_eq!(c.sb.stats().route(Vendor::Brex, "GET /v2/cards"), 1);
}

#[test]
fn offboarding_terminates_every_usable_card_and_deactivates_the_leaver() {
    let c = company();
    let p = c.active();
    // Give the leaver a card in each state Brex has.
    let virtual_card = json!({"card_type": "VIRTUAL", "limit_type": "CARD",
        "spend_controls": {"spend_limit": {"amount": 1000, "currency": "USD"}, "spend_duration": "MONTHLY"}});
    let card = |name: &str, body: &Value| {
        let mut body = body.clone();
        body["card_name"] = json!(name);
        c.card(&p.brex_id, body)
    };
    card("Still active", &virtual_card);
    let locked = card("Locked", &virtual_card);
    let terminated = card("Terminated", &virtual_card);
    card(
        "Shipped",
        &json!({"card_type": "PHYSICAL", "limit_type": "USER", "mailing_address":
            {"line1": "1 Main Street", "city": "Springfield", "state": "CA", "country": "US", "postal_code": "94105"}}),
    );
    let reason = json!({"reason": "OTHER"});
    assert_eq!(c.sb.brex("POST", &format!("/v2/cards/{locked}/lock"), Some(reason.clone())).0, 200);
    assert_eq!(c.sb.brex("POST", &format!("/v2/cards/{terminated}/terminate"), Some(reason)).0, 200);

    let before: BTreeMap<String, String> =
        c.sb.brex_cards(&p.brex_id)
            .iter()
            .map(|card| (card["id"].as_str().unwrap().to_string(), card["status"].as_str().unwrap().to_string()))
            .collect();
    let statuses: BTreeSet<&str> = before.values().map(String::as_str).collect();
    assert!(statuses.is_superset(&BTreeSet::from(["ACTIVE", "LOCKED", "SHIPPED", "TERMINATED"])), "{before:?}");
    let usable: BTreeSet<&String> = before.iter().filter(|(_, s)| *s != "TERMINATED").map(|(id, _)| id).collect();

    c.sb.sandbox.reset_stats();
    let run = c.run("brex/offboard-brex.json", &p.email).ok().json();
    assert_eq!(run["state"], "succeeded");

    // Every usable card got exactly one terminate; terminated ones were left alone.
    let sent: Vec<String> = steps(&run, "terminate_cards")
        .iter()
        .map(|s| {
            assert_eq!(s["status"], 200, "{s:#}");
            assert_eq!(s["request"]["body"]["reason"], "OTHER");
            s["request"]["url"].as_str().unwrap().to_string()
        })
        .collect();
    let expected: Vec<String> = usable.iter().map(|id| format!("/v2/cards/{id}/terminate")).collect();
    let mut sorted = sent.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "one terminate per usable card, none for terminated ones");
    let after = c.sb.brex_cards(&p.brex_id);
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|card| card["status"] == "TERMINATED"), "{after:#?}");
    let stats = c.sb.stats();
    assert_eq!(stats.side_effects.cards_terminated, usable.len() as u64);
    assert_eq!(stats.route(Vendor::Brex, "POST /v2/cards/{id}/terminate"), usable.len() as u64);
    assert_eq!(stats.status(Vendor::Brex, 400), 0, "no terminate of an already terminated card");

    // Then the user is deactivated and the record stamped.
    assert_eq!(stats.route(Vendor::Brex, "PUT /v2/users/{id}"), 1);
    assert_eq!(c.sb.brex_get(&format!("/v2/users/{}", p.brex_id))["status"], "DISABLED");
    let fields = c.home.fields(&p.email);
    assert_eq!(fields["brex_status"], "DISABLED");
    assert!(fields["offboarded_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{fields:#}");
}

#[test]
fn onboarding_invites_the_starter_and_gives_them_a_card() {
    let c = company();
    let p = c.starter();
    let run = c.run("brex/onboard-brex.json", &p.email).ok().json();
    assert_eq!(step(&run, "in_brex")["branch"], "else");

    let fields = c.home.fields(&p.email);
    let user_id = fields["brex_user_id"].as_str().expect("brex_user_id mapped from the invite").to_string();
    assert_eq!(fields["brex_status"], "INVITED");
    let card_id = fields["brex_user_card_id"].as_str().expect("brex_user_card_id mapped from the card").to_string();
    assert!(fields["onboarded_at"].is_string());

    let user = c.sb.brex_get(&format!("/v2/users/{user_id}"));
    assert_eq!((user["email"].as_str(), user["status"].as_str()), (Some(p.email.as_str()), Some("INVITED")));
    let cards = c.sb.brex_cards(&user_id);
    assert_eq!(cards.len(), 1, "{cards:#?}");
    assert_eq!(cards[0]["id"], card_id.as_str());
    assert_eq!(cards[0]["card_name"], format!("{} {} expenses", p.first, p.last));
    assert_eq!(cards[0]["card_type"], "VIRTUAL");
    assert_eq!(cards[0]["spend_controls"]["spend_limit"]["amount"], 100000);
    let stats = c.sb.stats();
    assert_eq!((stats.side_effects.users_invited, stats.side_effects.cards_created), (1, 1));

    // Run again: the example is safe to re-run, so Brex sees no second invite or card.
    let again = c.run("brex/onboard-brex.json", &p.email).ok().json();
    assert_eq!(step(&again, "in_brex")["branch"], "then");
    assert_eq!(step(&again, "has_card")["branch"], "then");
    let stats = c.sb.stats();
    assert_eq!((stats.side_effects.users_invited, stats.side_effects.cards_created), (1, 1));
    assert_eq!(c.sb.brex_cards(&user_id).len(), 1);
}

#[test]
fn create_card_retried_after_a_dropped_connection_creates_exactly_one_card() {
    let c = company();
    let p = c.active();
    let name = format!("{} {} expenses", p.first, p.last);
    let cards_before = c.sb.brex_cards(&p.brex_id).len();
    c.sb.sandbox.reset_stats();
    // Seed 2 drops the first request after Brex applied it (the answer is lost), then lets
    // the retry through. The draw is deterministic, and the checks below prove it happened.
    c.sb.sandbox.set_vendor_faults(
        Vendor::Brex,
        Faults { drop_connection: 0.75, drop_after_effect: 1.0, seed: 2, ..Faults::default() },
    );
    let run = c.run("brex/brex-create-user-card.json", &p.email).ok().json();
    c.sb.sandbox.set_vendor_faults(Vendor::Brex, Faults::default());
    assert_eq!(run["state"], "succeeded");

    let stats = c.sb.stats();
    assert!(stats.brex.faults.drop_after_side_effect >= 1, "a connection was dropped after the create: {stats:#?}");
    assert!(stats.idempotent_replays >= 1, "the retry was answered from Brex's idempotency store");
    assert_eq!(stats.duplicate_side_effects, 0);
    assert_eq!(stats.side_effects.cards_created, 1);
    assert_eq!(stats.cards_created_by_key.len(), 1, "{:?}", stats.cards_created_by_key);
    let (key, created) = stats.cards_created_by_key.iter().next().unwrap();
    assert_eq!(*created, 1);
    assert_eq!(stats.cards_created_by_owner_and_name.get(&format!("{}/{name}", p.brex_id)), Some(&1));

    // The journal shows every attempt, all with the one key Brex saw.
    let attempts = steps(&run, "create");
    assert!(attempts.len() > 1, "{run:#}");
    assert!(attempts[0]["error"].is_string(), "the first attempt lost its answer: {:#}", attempts[0]);
    let numbers: Vec<u64> = attempts.iter().map(|s| s["attempt"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=attempts.len() as u64).collect::<Vec<_>>());
    for a in &attempts {
        assert_eq!(header(a, "Idempotency-Key").as_ref(), Some(key));
    }
    let shown = c.home.roster(&["runs", "show", run["run_id"].as_str().unwrap(), "--json"]).ok().json();
    assert_eq!(steps(&shown, "create").len(), attempts.len());

    let cards = c.sb.brex_cards(&p.brex_id);
    assert_eq!(cards.len(), cards_before + 1);
    let named: Vec<&Value> = cards.iter().filter(|card| card["card_name"] == name.as_str()).collect();
    assert_eq!(named.len(), 1);
    assert_eq!(c.home.fields(&p.email)["brex_user_card_id"], named[0]["id"]);
}

#[test]
fn requests_the_preset_forbids_are_refused_before_anything_is_sent() {
    let c = company();
    let p = c.active();

    // CARD-limit cards need spend controls: the preset's check says so, and nothing is sent.
    let wf = c.home.file(
        "no-controls.json",
        r#"{"name": "no-controls", "begin": {"next": "create"}, "blocks": {
            "create": {"type": "api", "credential": "brex", "preset": "brex.create_user_card",
                       "with": {"card_name": "Vendor card", "card_type": "VIRTUAL", "limit_type": "CARD"}}}}"#,
    );
    let out = c.home.roster(&["run", wf.to_str().unwrap(), "--user", &p.email]).code(1);
    assert!(
        out.stdout.contains("brex.create_user_card: spend_controls is required when limit_type is CARD"),
        "{}",
        out.all()
    );

    // A reason that only turns out wrong when rendered is refused at run time.
    c.home.import(&json!([{"email": p.email, "why": "LOST", "brex_user_card_id": "ncard_whatever"}]));
    let wf = c.home.file(
        "lock-why.json",
        r#"{"name": "lock-why", "begin": {"next": "lock"}, "blocks": {
            "lock": {"type": "api", "credential": "brex", "preset": "brex.lock_card", "with": {"reason": "<<why>>"}}}}"#,
    );
    let out = c.home.roster(&["run", wf.to_str().unwrap(), "--user", &p.email]).code(1);
    assert!(out.stdout.contains("reason must be one of CARD_DAMAGED, CARD_LOST"), "{}", out.all());
    assert!(out.stdout.contains("not \"LOST\""), "{}", out.all());

    let stats = c.sb.stats();
    assert_eq!(stats.route(Vendor::Brex, "POST /v2/cards"), 0);
    assert_eq!(stats.route(Vendor::Brex, "POST /v2/cards/{id}/lock"), 0);
}

#[test]
fn a_bad_reason_fails_validation_with_its_path_and_the_allowed_values() {
    let home = TestHome::new();
    home.add_bearer("brex", "http://127.0.0.1:9", "sandbox-brex-token");
    let bad = home.file(
        "bad-reason.json",
        r#"{"name": "bad-reason", "begin": {"next": "lock"}, "blocks": {
            "lock": {"type": "api", "credential": "brex", "preset": "brex.lock_card",
                     "with": {"reason": "LOST", "description": "Offboarding"}, "next": "terminate"},
            "terminate": {"type": "api", "credential": "brex", "preset": "brex.terminate_card",
                          "with": {"description": "no reason given"}}}}"#,
    );
    let out = home.roster(&["validate", bad.to_str().unwrap()]).code(1);
    let text = out.all();
    for expected in [
        "blocks.lock.with.reason",
        "reason must be one of CARD_DAMAGED, CARD_LOST, CARD_NOT_RECEIVED, DO_NOT_NEED_PHYSICAL_CARD, \
         DO_NOT_NEED_VIRTUAL_CARD, FRAUD, OTHER",
        "\"LOST\"",
        "blocks.terminate.with.reason",
        "preset brex.terminate_card needs `reason`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn presets_list_shows_all_eight_and_show_renders_a_sample_with_its_idempotency_key() {
    let home = TestHome::new();
    let listed = home.roster(&["presets", "list", "--json"]).ok().json();
    let names: BTreeSet<&str> = listed.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(PRESETS));
    let table = home.roster(&["presets", "list"]).ok().stdout;
    for name in PRESETS {
        assert!(table.contains(name), "{name} missing from:\n{table}");
    }
    assert!(table.contains("PUT /v2/users/<<brex_user_id>>"), "{table}");

    let shown = home.roster(&["presets", "show", "brex.create_user_card"]).ok().stdout;
    for expected in ["POST /v2/cards", "Idempotency-Key: sample-idempotency-key", "required by the vendor"] {
        assert!(shown.contains(expected), "missing {expected:?} in:\n{shown}");
    }
    let shown = home.roster(&["presets", "show", "brex.create_user_card", "--json"]).ok().json();
    let sample = &shown["sample"]["request"];
    assert_eq!(sample["method"], "POST");
    assert!(
        sample["headers"].as_array().unwrap().contains(&json!(["Idempotency-Key", "sample-idempotency-key"])),
        "{sample:#}"
    );
    assert_eq!(sample["body"]["owner"]["user_id"], shown["sample"]["record"]["brex_user_id"]);
    assert_eq!(sample["body"]["limit_type"], "CARD");

    let out = home.roster(&["presets", "show", "brex.lock_crad"]).code(2);
    assert!(out.stderr.contains("brex.lock_card"), "a near miss is suggested: {}", out.stderr);
}

#[test]
fn a_batch_dry_run_previews_every_leaver_and_sends_and_writes_nothing() {
    let c = company();
    let leavers: Vec<Person> = c.with_status("ACTIVE").into_iter().take(2).collect();
    assert_eq!(leavers.len(), 2, "the company has two active people to offboard");
    let ended: Vec<Value> = leavers.iter().map(|p| json!({"email": p.email, "end_date": "2026-01-01"})).collect();
    c.home.import(&Value::Array(ended));
    c.sb.sandbox.reset_stats();
    let wf = example("offboarding.json");

    let text = c.home.roster(&["run", &wf, "--all", "--dry-run"]).ok();
    for p in &leavers {
        assert!(text.stdout.contains(&format!("{}:", p.email)), "{} is previewed:\n{}", p.email, text.stdout);
        assert!(
            text.stdout.contains(&format!("would send PUT /v2/users/{}", p.brex_id)),
            "the deactivation of {} is shown:\n{}",
            p.email,
            text.stdout
        );
    }
    assert!(text.stdout.contains("dry run: 2 run(s) would start"), "{}", text.stdout);
    let out = c.home.roster(&["run", &wf, "--all", "--dry-run", "--json"]).ok().json();
    assert_eq!(out["dry_run"], true);
    assert_eq!(out["runs"], 2, "{out}");
    let previewed: BTreeSet<&str> =
        out["people"].as_array().unwrap().iter().map(|p| p["record"].as_str().unwrap()).collect();
    assert_eq!(previewed, leavers.iter().map(|p| p.email.as_str()).collect());
    assert!(out["people"][0]["steps"].as_array().unwrap().iter().any(|s| s["block"] == "deactivate"), "{out}");

    let stats = c.sb.stats();
    assert_eq!(stats.brex.requests, 0, "a dry run sends nothing: {:?}", stats.brex.requests_by_route);
    assert_eq!(stats.side_effects.total(), 0, "{:?}", stats.side_effects);
    assert_eq!(c.home.roster(&["runs", "list", "--json"]).ok().json(), json!([]), "no runs are stored");
    for p in &leavers {
        assert!(c.home.fields(&p.email).get("offboarded_at").is_none(), "{} is not stamped", p.email);
    }
    let store = c.home.store();
    let batch = roster_engine::store::Mark::Batch { workflow: "offboarding".into() };
    assert_eq!(support::block(store.scheduler.mark(&batch)).unwrap(), None, "no batch is left to resume");
    let presets = roster_engine::presets::with_folder(None).unwrap();
    let cx = roster_blocks::kinds::CompileContext { presets: &presets, credentials: None };
    let compiled = roster_engine::workflow::Workflow::load(std::path::Path::new(&wf), &cx).unwrap();
    let source = support::block(store.workflows.source(&compiled.hash)).unwrap();
    assert_eq!(source, None, "the workflow source is not stored");
}
