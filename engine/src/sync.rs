//! Integrations: pull people from a source system into the store.
//!
//! A connector only fetches and pages; everything else happens here: filters over the
//! source record, the mapping onto record fields, matching by sync key, the create/update
//! preference, marking people who left the source, and the session log. Pages are
//! written as they arrive, so memory stays flat however many people the source holds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use roster_blocks::credential::Credential;
use roster_blocks::diag::{ConfigError, Diagnostics, join, suggest};
use roster_blocks::fields::Fields;
use roster_blocks::http::rate::RateLimiter;
use roster_blocks::kinds::{Schedule, compile_schedule};
use roster_blocks::paging::{PageLimits, PageTrail};
use roster_blocks::rules::Condition;
use roster_blocks::template::Template;
use roster_connectors::{CONNECTORS, SyncOptions};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::clock::{Clock, rfc3339_millis};
use crate::error::{Error, Result};
use crate::model::{CredentialKind, EventKind, Record, SyncCounts, SyncFailure, SyncSession, SyncState};
use crate::store::{KeyMatch, KeyQuery, RecordWrite, Store, key_text};

/// How many per-person failures a session keeps, and how many samples and previews.
const MAX_FAILURES: usize = 200;
const MAX_SAMPLES: usize = 3;
const MAX_PREVIEW: usize = 50;

/// Which writes a sync may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    CreateUpdate,
    CreateOnly,
    UpdateOnly,
}

/// Where a mapped field's value comes from.
#[derive(Debug, Clone)]
pub enum MappingValue {
    /// `"<<a.b>>"`: the value at that path, null when the source lacks it.
    Path(roster_blocks::path::Path),
    /// Text with variables; a missing variable fails that person with the reason.
    Template(Template),
    /// A literal JSON value.
    Literal(Value),
}

/// A loaded, validated integration file.
#[derive(Debug, Clone)]
pub struct Integration {
    pub name: String,
    pub description: String,
    pub connector: String,
    pub credential: String,
    pub preference: Preference,
    pub sync_key: String,
    pub mapping: Vec<(String, MappingValue)>,
    pub filters: Option<Condition>,
    pub schedule: Schedule,
    pub options: SyncOptions,
    /// `options.max_pages` / `options.max_items`: a listing past them fails the sync.
    pub paging: PageLimits,
    pub file: String,
}

const KEYS: &[&str] = &[
    "name",
    "description",
    "connector",
    "credential",
    "preference",
    "sync_key",
    "mapping",
    "filters",
    "schedule",
    "options",
];

impl Integration {
    pub fn load(path: &Path, credentials: Option<&BTreeSet<String>>) -> Result<Integration> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(format!("cannot read {file}: {e}")))?;
        Self::compile(&text, &file, credentials)
    }

    pub fn compile(text: &str, file: &str, credentials: Option<&BTreeSet<String>>) -> Result<Integration> {
        let invalid = |errors| Error::Invalid { file: file.to_string(), errors };
        let value: Value =
            serde_json::from_str(text).map_err(|e| invalid(vec![roster_blocks::diag::json_syntax(&e)]))?;
        let mut diags = Diagnostics::new();
        let integration = compile(&value, file, credentials, &mut diags);
        match integration {
            Some(i) if diags.is_empty() => Ok(i),
            _ => Err(invalid(diags.into_errors())),
        }
    }

    /// The record field that says whether a person is still in this source.
    pub fn present_field(&self) -> String {
        format!("{}_present", self.name.replace(['-', '.', ' '], "_"))
    }

    /// Maps one source record onto record fields.
    pub fn map(&self, source: &Value) -> std::result::Result<Map<String, Value>, String> {
        let mut out = Map::new();
        for (field, how) in &self.mapping {
            let value = match how {
                MappingValue::Path(p) => p.lookup(source).cloned().unwrap_or(Value::Null),
                MappingValue::Template(t) => t.render_value(source).map_err(|e| format!("{field}: {e}"))?,
                MappingValue::Literal(v) => v.clone(),
            };
            out.insert(field.clone(), value);
        }
        Ok(out)
    }
}

fn compile(
    value: &Value,
    file: &str,
    credentials: Option<&BTreeSet<String>>,
    diags: &mut Diagnostics,
) -> Option<Integration> {
    let f = Fields::open(value, "", "an integration", KEYS, diags)?;
    let name = f.string("name", diags).unwrap_or_default().to_string();
    let connector = f.string("connector", diags).unwrap_or_default().to_string();
    let info = CONNECTORS.iter().find(|c| c.name == connector);
    if info.is_none() && !connector.is_empty() {
        diags.push(
            ConfigError::new("connector", format!("unknown connector `{connector}`"))
                .with_help(suggest(&connector, CONNECTORS.iter().map(|c| c.name))),
        );
    }
    let credential = f.string("credential", diags).unwrap_or_default().to_string();
    if let Some(known) = credentials
        && !credential.is_empty()
        && !known.contains(&credential)
    {
        diags.push(ConfigError::new("credential", format!("unknown credential `{credential}`")).with_help(format!(
            "add it with `roster credentials add {credential} --kind {} ...`",
            info.map_or(CredentialKind::Bearer, |i| i.credential_kind)
        )));
    }
    let preference = match f.opt_string("preference", diags).unwrap_or("create_update") {
        "create_update" => Preference::CreateUpdate,
        "create_only" => Preference::CreateOnly,
        "update_only" => Preference::UpdateOnly,
        other => {
            let known = ["create_update", "create_only", "update_only"];
            diags.push(
                ConfigError::new("preference", format!("unknown preference `{other}`"))
                    .with_help(suggest(other, known)),
            );
            Preference::CreateUpdate
        }
    };
    let sync_key = f.opt_string("sync_key", diags).unwrap_or("email").to_string();

    // The connector's default mapping, then the file's entries (null removes one).
    let mut mapping: Vec<(String, MappingValue)> = Vec::new();
    if let Some(info) = info {
        for (field, source) in info.default_mapping {
            if let Some(v) =
                compile_mapping_value(&Value::String((*source).to_string()), &join("mapping", field), diags)
            {
                mapping.push(((*field).to_string(), v));
            }
        }
    }
    if let Some(map) = f.opt_object("mapping", diags) {
        for (field, v) in map {
            mapping.retain(|(k, _)| k != field);
            if v.is_null() {
                continue;
            }
            if let Some(m) = compile_mapping_value(v, &join("mapping", field), diags) {
                mapping.push((field.clone(), m));
            }
        }
    }
    if !mapping.iter().any(|(k, _)| *k == sync_key) {
        diags.push(
            ConfigError::new("sync_key", format!("the sync key `{sync_key}` is not a mapped field"))
                .with_help(format!("add \"{sync_key}\": \"<<...>>\" to `mapping`, or choose a mapped field")),
        );
    }
    let filters = f.get("filters").and_then(|v| Condition::compile(v, "filters", diags));
    let schedule = match f.get("schedule") {
        Some(v) => compile_schedule(v, "schedule", diags),
        None => compile_schedule(&Value::String("daily".into()), "schedule", diags),
    };
    let mut options = SyncOptions::default();
    let mut paging = PageLimits::SYNC;
    if let Some(o) = f.opt_object("options", diags) {
        paging = paging.compile(o, "options", diags);
        if let Some(ps) = o.get("page_size") {
            match ps.as_u64() {
                Some(n) if (1..=1000).contains(&n) => options.page_size = Some(n as u32),
                _ => diags.error("options.page_size", "page_size must be a whole number from 1 to 1000"),
            }
        }
        if let Some(ids) = o.get("policy_ids") {
            match ids.as_array() {
                Some(a) => options.policy_ids = a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                None => diags.error("options.policy_ids", "policy_ids must be an array of Expensify policy ids"),
            }
        }
    }
    Some(Integration {
        name,
        description: f.opt_string("description", diags).unwrap_or_default().to_string(),
        connector,
        credential,
        preference,
        sync_key,
        mapping,
        filters,
        schedule: schedule?,
        options,
        paging,
        file: file.to_string(),
    })
}

fn compile_mapping_value(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<MappingValue> {
    let Value::String(src) = value else { return Some(MappingValue::Literal(value.clone())) };
    match Template::compile(src) {
        Ok(t) => Some(match t.single_variable() {
            Some(p) => MappingValue::Path(p.clone()),
            None if t.is_literal() => MappingValue::Literal(value.clone()),
            None => MappingValue::Template(t),
        }),
        Err(e) => {
            diags.error(path, format!("bad template: {e}"));
            None
        }
    }
}

/// Reports progress as pages arrive.
pub trait SyncObserver: Send {
    fn page(&mut self, _counts: &SyncCounts) {}
}

pub struct NoProgress;
impl SyncObserver for NoProgress {}

/// Runs one integration now. With `test`, fetches and reports what would change and
/// writes nothing but the session log. `rate` is the credential's limiter, shared with the
/// runs that use it (`Engine::rate_limiter`). No sync lease is taken: this is for a store
/// nothing else syncs (benchmarks); `Service::sync` takes one first.
pub async fn run(
    store: &Store,
    integration: &Integration,
    credential: &Credential,
    rate: Option<Arc<RateLimiter>>,
    clock: &Clock,
    test: bool,
    observer: &mut dyn SyncObserver,
) -> Result<SyncSession> {
    let session = new_session(integration, None, test, clock);
    run_session(store, integration, credential, rate, clock, session, observer).await
}

/// A session of `integration` starting now, run by `node`.
pub fn new_session(integration: &Integration, node: Option<&str>, test: bool, clock: &Clock) -> SyncSession {
    SyncSession {
        id: Uuid::now_v7(),
        integration: integration.name.clone(),
        connector: integration.connector.clone(),
        state: SyncState::Running,
        test,
        node: node.map(str::to_string),
        started_at: rfc3339_millis(clock.now()),
        finished_at: None,
        counts: SyncCounts::default(),
        failures: Vec::new(),
        error: None,
        notes: Vec::new(),
        samples: Vec::new(),
        preview: Vec::new(),
        skips: Vec::new(),
    }
}

/// Runs `session` (from [`new_session`]) to its end, keeping it in the store as it goes.
pub async fn run_session(
    store: &Store,
    integration: &Integration,
    credential: &Credential,
    rate: Option<Arc<RateLimiter>>,
    clock: &Clock,
    mut session: SyncSession,
    observer: &mut dyn SyncObserver,
) -> Result<SyncSession> {
    let test = session.test;
    store.syncs.put_session(&session).await?;
    match sync_pages(store, integration, credential, rate, test, observer, &mut session).await {
        Ok(()) => {
            session.state = if session.error.is_some() { SyncState::Failed } else { SyncState::Succeeded };
            session.finished_at = Some(rfc3339_millis(clock.now()));
            store.syncs.put_session(&session).await?;
            Ok(session)
        }
        Err(e) => {
            // Never leave a session "running": say why it stopped (if the store lets us).
            // (Connector errors come scrubbed; the store scrubs whatever it keeps.)
            session.state = SyncState::Failed;
            session.error = Some(e.to_string());
            session.finished_at = Some(rfc3339_millis(clock.now()));
            let _ = store.syncs.put_session(&session).await;
            Err(e)
        }
    }
}

/// One source person, read and mapped, before the store is asked about the page.
enum Prepared {
    /// Not written, and counted as failed, with why.
    Failed {
        who: String,
        reason: String,
    },
    /// Left out by the filters; its key, if it maps to one, keeps a known person present.
    Filtered {
        key: Option<String>,
    },
    Mapped {
        who: String,
        fields: Map<String, Value>,
        key: String,
    },
}

/// Reads one source item: filters, mapping and sync key, and a key already seen in this
/// sync (`keys`) refused as a second person. `number` names an item with nothing else to
/// name it by.
fn prepare(
    integration: &Integration,
    mut record: Value,
    started: &str,
    number: u64,
    keys: &mut HashSet<String>,
) -> Prepared {
    // The first of these that has a value (a null email falls through to the id).
    let who = ["email", "emailAddress", "id"]
        .iter()
        .find_map(|k| record.get(k).and_then(key_text))
        .unwrap_or_else(|| format!("record #{number}"));
    let Some(obj) = record.as_object_mut() else {
        return Prepared::Failed { who, reason: "the source sent something that is not a JSON object".into() };
    };
    // Mappings may use the session's start time, which the source does not hold.
    obj.insert("connector_sync_time".into(), Value::String(started.to_string()));
    if let Some(filters) = &integration.filters {
        match filters.evaluate(&record) {
            Ok(true) => {}
            Ok(false) => {
                let key = integration.map(&record).ok().and_then(|f| f.get(&integration.sync_key).and_then(key_text));
                return Prepared::Filtered { key };
            }
            Err(e) => return Prepared::Failed { who, reason: format!("filters: {e}") },
        }
    }
    let fields = match integration.map(&record) {
        Ok(f) => f,
        Err(e) => return Prepared::Failed { who, reason: format!("mapping: {e}") },
    };
    let Some(key) = fields.get(&integration.sync_key).and_then(key_text) else {
        return Prepared::Failed { who, reason: format!("no `{}` value (the sync key)", integration.sync_key) };
    };
    if !keys.insert(key.clone()) {
        let reason = format!("a second person with {} {key}: refused; the first one was kept", integration.sync_key);
        return Prepared::Failed { who, reason };
    }
    Prepared::Mapped { who, fields, key }
}

/// Counts a person the sync could not write, keeping the first few with why.
fn record_failure(session: &mut SyncSession, who: String, reason: String) {
    session.counts.failed += 1;
    if session.failures.len() < MAX_FAILURES {
        session.failures.push(SyncFailure { who, reason });
    }
}

/// Fetches every page and writes it; per-person problems go into the session, a failed
/// page ends the listing (as incomplete), and store errors return.
async fn sync_pages(
    store: &Store,
    integration: &Integration,
    credential: &Credential,
    rate: Option<Arc<RateLimiter>>,
    test: bool,
    observer: &mut dyn SyncObserver,
    session: &mut SyncSession,
) -> Result<()> {
    let started = session.started_at.clone();
    // Index the key even for a test run: it writes no record, and it spares a store
    // scan per source person.
    store.records.index_field(&integration.sync_key).await?;
    let client = roster_blocks::http::client(std::time::Duration::from_secs(60), std::time::Duration::from_secs(10));
    let mut source =
        match roster_connectors::open(&integration.connector, credential, integration.options.clone(), client, rate) {
            Ok(source) => source,
            Err(e) => return Err(Error::Refused(e.to_string())),
        };
    let present = integration.present_field();
    let source_label = format!("sync:{}", integration.name);
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut keys: HashSet<String> = HashSet::new();
    let mut complete = true;
    let mut trail = PageTrail::new(integration.paging);
    loop {
        let page = match source.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                complete = false;
                session.error = Some(e.to_string());
                break;
            }
        };
        // Checked before the page is written: a looping or endless listing stops here.
        if let Err(e) = trail.page(page.records.len(), page.next.as_deref()) {
            complete = false;
            let raise = format!("in `options` of {}", integration.file);
            session.error = Some(format!("{}: {}", integration.connector, e.describe(&raise)));
            break;
        }
        if let Some(raw) = page.raw
            && session.samples.len() < MAX_SAMPLES
        {
            session.samples.push(raw);
        }
        // Every person of the page is read and mapped first, so the page's keys are looked
        // up in the store at once (one query, not one per person).
        let prepared: Vec<Prepared> = page
            .records
            .into_iter()
            .map(|record| {
                session.counts.fetched += 1;
                prepare(integration, record, &started, session.counts.fetched, &mut keys)
            })
            .collect();
        let wanted: Vec<String> = prepared
            .iter()
            .filter_map(|p| match p {
                Prepared::Filtered { key } => key.clone(),
                Prepared::Mapped { key, .. } => Some(key.clone()),
                Prepared::Failed { .. } => None,
            })
            .collect();
        let mut stored: HashMap<String, Vec<Record>> = HashMap::new();
        if !wanted.is_empty() {
            let query = KeyQuery { field: integration.sync_key.clone(), matches: KeyMatch::OneOf(wanted) };
            for record in store.records.records_by_keys(&[query]).await? {
                if let Some(key) = record.fields.get(&integration.sync_key).and_then(key_text) {
                    stored.entry(key).or_default().push(record);
                }
            }
        }
        let mut writes = Vec::new();
        for person in prepared {
            let (who, mut fields, key) = match person {
                Prepared::Failed { who, reason } => {
                    record_failure(session, who, reason);
                    continue;
                }
                Prepared::Filtered { key } => {
                    session.counts.filtered += 1;
                    // Filtered out is not gone: a known person stays present.
                    if let Some(known) = key.and_then(|k| stored.get(&k)) {
                        seen.extend(known.iter().map(|r| r.id));
                    }
                    continue;
                }
                Prepared::Mapped { who, fields, key } => (who, fields, key),
            };
            let existing = stored.remove(&key).unwrap_or_default();
            if existing.len() > 1 {
                record_failure(
                    session,
                    who,
                    format!("{} records share {} {key}; fix them first", existing.len(), integration.sync_key),
                );
                continue;
            }
            let existing = existing.into_iter().next();
            let allowed = !matches!(
                (&existing, integration.preference),
                (None, Preference::UpdateOnly) | (Some(_), Preference::CreateOnly)
            );
            if let Some(r) = &existing {
                seen.insert(r.id);
            }
            if !allowed {
                session.counts.skipped += 1;
                if session.skips.len() < MAX_FAILURES {
                    let reason = match integration.preference {
                        Preference::UpdateOnly => format!("no record with this {}", integration.sync_key),
                        _ => format!(
                            "a record with this {} exists and the preference is create_only",
                            integration.sync_key
                        ),
                    };
                    session.skips.push(SyncFailure { who: key.clone(), reason });
                }
                continue;
            }
            fields.insert(present.clone(), Value::Bool(true));
            // Only what differs is written: an unchanged person costs no transaction.
            let changed: Map<String, Value> = match &existing {
                None => fields,
                Some(r) => fields.into_iter().filter(|(k, v)| r.fields.get(k) != Some(v)).collect(),
            };
            if existing.is_some() && changed.is_empty() {
                session.counts.unchanged += 1;
                continue;
            }
            if test {
                let kind = if existing.is_some() { "update" } else { "create" };
                if existing.is_some() {
                    session.counts.updated += 1;
                } else {
                    session.counts.created += 1;
                }
                if session.preview.len() < MAX_PREVIEW {
                    session.preview.push(serde_json::json!({"action": kind, "key": key, "fields": changed}));
                }
                continue;
            }
            let fields = changed;
            writes.push(RecordWrite {
                id: existing.map(|r| r.id),
                changes: fields,
                source: source_label.clone(),
                at: started.clone(),
            });
        }
        if !writes.is_empty() {
            for written in store.records.write_records(writes).await? {
                seen.insert(written.record.id);
                match written.event.as_ref().map(|e| e.kind) {
                    Some(EventKind::Created) => session.counts.created += 1,
                    Some(_) => session.counts.updated += 1,
                    None => session.counts.unchanged += 1,
                }
            }
        }
        observer.page(&session.counts);
    }
    // Only a complete listing in which every item was read can say who is gone: a person
    // whose item failed (or who was on a page never fetched) is unseen but not gone.
    let failed_items = session.counts.failed;
    if failed_items > 0 && session.error.is_none() {
        session.error = Some(format!(
            "{failed_items} of {} item(s) from the source failed (see the failures)",
            session.counts.fetched
        ));
    }
    if integration.preference == Preference::UpdateOnly && session.counts.skipped > 0 {
        session.notes.push(format!(
            "{} person(s) skipped: no record with this {} (an update_only sync only updates people already in the \
             store; sync the HR source or import them first)",
            session.counts.skipped, integration.sync_key
        ));
    }
    if !complete {
        session.notes.push("nobody was marked missing: the listing did not reach its end".into());
    } else if failed_items > 0 {
        session.notes.push(format!(
            "nobody was marked missing: {failed_items} item(s) failed, and a person whose item failed is not gone"
        ));
    } else {
        let mut gone = Vec::new();
        store
            .records
            .scan_records(&mut |r| {
                if !seen.contains(&r.id) && r.fields.get(&present) == Some(&Value::Bool(true)) {
                    gone.push(r.id);
                }
                true
            })
            .await?;
        session.counts.missing = gone.len() as u64;
        if !test && !gone.is_empty() {
            let writes = gone
                .into_iter()
                .map(|id| RecordWrite {
                    id: Some(id),
                    changes: Map::from_iter([(present.clone(), Value::Bool(false))]),
                    source: source_label.clone(),
                    at: started.clone(),
                })
                .collect();
            store.records.write_records(writes).await?;
        }
    }
    Ok(())
}
