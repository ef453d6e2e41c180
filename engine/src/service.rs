//! What makes workflows run by themselves: the loaded catalog of workflows and
//! integrations, the scheduler, the event dispatcher and the pool of run workers.
//! `roster serve`, `roster run --all` and `roster demo` are all built from these parts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use roster_blocks::kinds::{CompileContext, Schedule, Trigger};
use roster_blocks::preset::PresetCatalog;
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::model::{ChangeEvent, EventKind, Record, Run, RunState, RunTrigger, SyncSession, SyncState};
use crate::run::{Engine, Quiet};
use crate::store::{ClaimRequest, ConcurrencyLimits, Mark, Store};
use crate::sync::Integration;
use crate::sync_lease::{HeldLease, SyncHolder, Taken};
use crate::workflow::Workflow;

/// Every workflow and integration a service runs, validated together.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub workflows: BTreeMap<String, Arc<Workflow>>,
    pub integrations: BTreeMap<String, Arc<Integration>>,
}

impl Catalog {
    /// Loads every `*.json` in the two folders; refuses with every problem of every file.
    pub fn load(
        workflows_dir: &Path,
        integrations_dir: &Path,
        presets: &PresetCatalog,
        credentials: Option<&BTreeSet<String>>,
    ) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        let mut problems = Vec::new();
        let cx = CompileContext { presets, credentials };
        for path in json_files(workflows_dir)? {
            match guarded(&path, || Workflow::load(&path, &cx)) {
                Ok(wf) => {
                    if let Some(other) = catalog.workflows.get(&wf.name) {
                        problems.push(format!(
                            "{}: the name `{}` is already used by {}",
                            path.display(),
                            wf.name,
                            other.file
                        ));
                    } else {
                        catalog.workflows.insert(wf.name.clone(), Arc::new(wf));
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        for path in json_files(integrations_dir)? {
            match guarded(&path, || Integration::load(&path, credentials)) {
                Ok(i) => {
                    catalog.integrations.insert(i.name.clone(), Arc::new(i));
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() { Ok(catalog) } else { Err(Error::Refused(problems.join("\n"))) }
    }
}

/// Loads one file; a bug that panics on it refuses that file instead of taking down a
/// running `serve` that was only asked to reload.
fn guarded<T>(path: &Path, load: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).unwrap_or_else(|_| {
        Err(Error::Refused(format!("{}: cannot be loaded (an internal error; please report it)", path.display())))
    })
}

/// The `*.json` files of a folder, sorted; none when it does not exist.
pub fn json_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    Ok(out)
}

/// A schedule that fired: which workflow, for which time, how many runs it queued.
#[derive(Debug, Clone)]
pub struct Fired {
    pub workflow: String,
    pub at: Timestamp,
    /// The fire's date in the schedule's time zone: its runs' `<<today>>`.
    pub local_date: Date,
    pub queued: usize,
    /// Fire times that passed while nothing was running, fired once as `at`.
    pub missed: usize,
}

pub struct Service {
    pub engine: Arc<Engine>,
    catalog: RwLock<Arc<Catalog>>,
    presets: PresetCatalog,
    /// Compiled workflow versions by content hash, for runs started on an older file.
    versions: Mutex<HashMap<String, Arc<Workflow>>>,
    wake: Notify,
    busy: AtomicUsize,
    /// Who this process is when it claims runs: leases name it.
    node: String,
    /// How long a claim holds without a heartbeat.
    lease: std::sync::OnceLock<Duration>,
    /// Per integration, the last sync seen holding its lease when a scheduled one was due.
    busy_syncs: Mutex<HashMap<String, Uuid>>,
    /// When set, workers take only runs with this trigger (a CLI batch leaves runs that
    /// other processes left unfinished to their own settling).
    only_trigger: std::sync::OnceLock<RunTrigger>,
}

impl Service {
    pub fn new(engine: Arc<Engine>, catalog: Catalog, presets: PresetCatalog) -> Arc<Service> {
        Arc::new(Service {
            engine,
            catalog: RwLock::new(Arc::new(catalog)),
            presets,
            versions: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            busy: AtomicUsize::new(0),
            node: node_id(),
            lease: std::sync::OnceLock::new(),
            busy_syncs: Mutex::new(HashMap::new()),
            only_trigger: std::sync::OnceLock::new(),
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Swaps in a newly validated catalog; runs in flight keep their own version.
    pub fn replace_catalog(&self, catalog: Catalog) {
        *self.catalog.write().expect("catalog lock") = Arc::new(catalog);
    }

    /// Makes the workers take only runs with `trigger` (set once, before `work`).
    pub fn only_runs_of(&self, trigger: &RunTrigger) {
        let _ = self.only_trigger.set(trigger.clone());
    }

    /// Whether nothing is left in the queue for these workers. A batch's workers also wait
    /// for its runs another claimer holds: on a store several processes share, a serve node
    /// may have taken some, and a run whose claimer died is theirs once its lease expires
    /// (on sled that is at once, so they are simply claimed).
    async fn queue_empty(&self) -> Result<bool> {
        let Some(trigger) = self.only_trigger.get() else {
            return Ok(self.engine.store.queue.queued_count().await? == 0);
        };
        for state in [RunState::Queued, RunState::Running] {
            let filter = crate::store::RunFilter {
                trigger: Some(trigger.clone()),
                state: Some(state),
                limit: Some(1),
                ..Default::default()
            };
            if !self.engine.store.runs.runs(&filter).await?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// At start, after a crash: runs left `running` are resumed at the step they were on
    /// once their claim's lease has expired (a sled folder's leases expire as it opens),
    /// so nothing needs moving here; this says how many there are. Returns how many. Sync
    /// sessions left `running` whose sync lease is gone are marked interrupted.
    pub async fn recover(&self) -> Result<usize> {
        let unfinished = self.engine.store.runs.unfinished_runs().await?;
        let n = unfinished.iter().filter(|r| r.state == RunState::Running).count();
        if n > 0 {
            tracing::info!("{n} unfinished runs will resume where they stopped");
        }
        // A sync cut off by a crash is over: say so instead of listing it as running. A sync
        // another live node runs is left alone (its lease names it).
        crate::sync_lease::interrupt_abandoned(&self.engine.store, 100).await?;
        Ok(n)
    }

    /// The names of the credentials in the store, which workflow and integration files
    /// are checked against.
    async fn credential_names(&self) -> Result<BTreeSet<String>> {
        Ok(self.engine.store.credentials.credentials().await?.into_iter().map(|c| c.name).collect())
    }

    /// Compiles a workflow file's text that was sent to the service (a file it has not
    /// loaded), with its presets and credentials, exactly as loading it would.
    pub async fn compile_workflow(&self, source: &str, file: &str) -> Result<Workflow> {
        let credentials = self.credential_names().await?;
        Workflow::compile(source, file, &CompileContext { presets: &self.presets, credentials: Some(&credentials) })
    }

    /// Compiles an integration file's text that was sent to the service.
    pub async fn compile_integration(&self, source: &str, file: &str) -> Result<Integration> {
        Integration::compile(source, file, Some(&self.credential_names().await?))
    }

    /// The compiled workflow a run started with.
    pub async fn workflow_version(&self, hash: &str) -> Result<Arc<Workflow>> {
        if let Some(wf) = self.versions.lock().expect("versions").get(hash) {
            return Ok(wf.clone());
        }
        let current = self.catalog().workflows.values().find(|w| w.hash == hash).cloned();
        let wf = match current {
            Some(wf) => wf,
            None => {
                let source = self
                    .engine
                    .store
                    .workflows
                    .source(hash)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("workflow version {hash} is missing from the store")))?;
                let cx = CompileContext { presets: &self.presets, credentials: None };
                Arc::new(Workflow::compile(&source, &format!("stored version {}", &hash[..12.min(hash.len())]), &cx)?)
            }
        };
        self.versions.lock().expect("versions").insert(hash.to_string(), wf.clone());
        Ok(wf)
    }

    /// Indexes every field a workflow's rules may be looked up by ([`crate::select`]), so a
    /// schedule fire or a batch reads only the candidates. The first build reads the whole
    /// store once; after that, every write keeps the index current.
    pub async fn prepare_indexes(&self) -> Result<Vec<String>> {
        let mut fields = Vec::new();
        for wf in self.catalog().workflows.values() {
            for field in wf.begin.rules.as_ref().map(crate::select::lookup_fields).unwrap_or_default() {
                if !fields.contains(&field) {
                    self.engine.store.records.index_field(&field).await?;
                    fields.push(field);
                }
            }
        }
        Ok(fields)
    }

    /// Every record the workflow's begin rules accept now, `today` being the machine's date.
    pub async fn select(&self, wf: &Workflow) -> Result<Vec<Record>> {
        self.select_on(wf, self.engine.clock.today()).await
    }

    /// Every record the workflow's begin rules accept with `today` as the date, in id order.
    /// When the rules narrow a field to values the field index can look up
    /// (`start_date equals <<today>>`, `end_date on_or_before <<today>>`: see
    /// [`crate::select`]), only those candidates are read; otherwise every record is.
    pub async fn select_on(&self, wf: &Workflow, today: Date) -> Result<Vec<Record>> {
        let now = Value::String(rfc3339(self.engine.clock.now()));
        let mut out = Vec::new();
        let mut failure = None;
        let time = serde_json::json!({"now": now, "today": today.to_string()});
        let narrowed = wf.begin.rules.as_ref().and_then(|r| crate::select::candidates(r, &time));
        // Rules see exactly what they see when the run starts (`Engine::scope`).
        let mut check = self.engine.rule_checker(wf, today);
        let mut visit = |record: Record| {
            let accepted = check(&record);
            match accepted {
                Ok(true) => out.push(record),
                Ok(false) => {}
                Err(e) => {
                    failure = Some(e.to_string());
                    return false;
                }
            }
            true
        };
        match narrowed {
            Some(queries) => {
                for record in self.engine.store.records.records_by_keys(&queries).await? {
                    if !visit(record) {
                        break;
                    }
                }
            }
            None => self.engine.store.records.scan_records(&mut visit).await?,
        }
        match failure {
            Some(e) => Err(Error::Refused(format!("{}: the begin rules cannot be evaluated: {e}", wf.name))),
            None => Ok(out),
        }
    }

    /// Fires every workflow schedule that is due: once per due schedule, however many
    /// fire times passed while nothing was running. A fire's runs see the fire's date in
    /// the schedule's time zone as `<<today>>` (from selection to each run's last step),
    /// and a person gets one run per workflow and local day (per fire, for schedules that
    /// fire more than once that day).
    pub async fn fire_schedules(&self) -> Result<Vec<Fired>> {
        let mut fired = Vec::new();
        for wf in self.catalog().workflows.values() {
            let Trigger::Schedule(schedule) = &wf.begin.trigger else { continue };
            let mark = Mark::ScheduleFired { workflow: wf.name.clone() };
            // One workflow that cannot fire never keeps the others from firing.
            let due = match schedule_clock(schedule) {
                Ok((cron, zone)) => self.due(&cron, &zone, &mark).await.map(|due| due.map(|d| (d, cron, zone))),
                Err(e) => Err(e),
            };
            let (Due { at, missed, previous }, cron, zone) = match due {
                Ok(Some(due)) => due,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("{}: schedule not checked: {e}", wf.name);
                    continue;
                }
            };
            let fire = at.to_zoned(zone.clone());
            let local_date = fire.date();
            let per_fire = fires_again_that_day(&cron, &fire);
            let records = match self.select_on(wf, local_date).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!("{}: schedule not fired: {e}", wf.name);
                    continue;
                }
            };
            let mut queued = 0;
            let stamp = rfc3339(at);
            for record in &records {
                let dedupe = if per_fire {
                    format!("wf:{}:rec:{}:fire:{stamp}", wf.name, record.id)
                } else {
                    format!("wf:{}:rec:{}:day:{local_date}", wf.name, record.id)
                };
                let trigger = RunTrigger::Schedule(stamp.clone());
                if self.engine.create_run_once(wf, record, trigger, &dedupe, local_date).await?.is_some() {
                    queued += 1;
                }
            }
            // Marked after the runs exist: a crash in between fires again and dedupes.
            self.advance(&mark, previous.as_deref(), Some(&stamp)).await?;
            if missed > 0 {
                tracing::warn!(
                    "{}: {missed} scheduled time(s) passed while Roster was not running; fired once for {stamp}",
                    wf.name
                );
            }
            tracing::info!("{}: schedule fired for {stamp} (local date {local_date}), {queued} run(s) queued", wf.name);
            fired.push(Fired { workflow: wf.name.clone(), at, local_date, queued, missed });
        }
        if fired.iter().any(|f| f.queued > 0) {
            self.wake();
        }
        Ok(fired)
    }

    /// Runs every integration whose sync schedule is due, and every failed scheduled sync
    /// whose retry is due. When several are due at once, integrations that may create
    /// records (the HR source) go before update-only ones, so a first start has the
    /// people in the store before the syncs that only update them.
    ///
    /// A failed scheduled sync is logged at WARN and tried again after 5 min, 15 min,
    /// 1 h, 3 h and 6 h, as long as that is before its next scheduled time; the retry
    /// mark is kept in the store (`sync-retry:<name>`), so a restart keeps it.
    pub async fn sync_due(&self) -> Result<Vec<SyncSession>> {
        let catalog = self.catalog();
        let mut integrations: Vec<&Arc<Integration>> = catalog.integrations.values().collect();
        integrations.sort_by_key(|i| (i.preference == crate::sync::Preference::UpdateOnly, i.name.clone()));
        let mut sessions = Vec::new();
        for integration in integrations {
            let mark = Mark::SyncFired { integration: integration.name.clone() };
            let retry_mark = Mark::SyncRetry { integration: integration.name.clone() };
            // One integration that cannot be checked or synced never keeps the others from syncing.
            let checked = match schedule_clock(&integration.schedule) {
                Ok((cron, zone)) => self.due(&cron, &zone, &mark).await.map(|due| (due, cron, zone)),
                Err(e) => Err(e),
            };
            let (fire, cron, zone) = match checked {
                Ok(checked) => checked,
                Err(e) => {
                    tracing::error!("sync {}: schedule not checked: {e}", integration.name);
                    continue;
                }
            };
            let now = self.engine.clock.now();
            let retry_text = self.engine.store.scheduler.mark(&retry_mark).await?;
            let retry = retry_text.as_deref().and_then(parse_retry);
            // 0 for a scheduled time (which replaces any retry still waiting), else which retry.
            let retry_number = match (&fire, retry) {
                (Some(_), _) => 0,
                (None, Some((done, at))) if at <= now => done,
                _ => continue,
            };
            // One node syncs an integration at a time: it takes the integration's sync lease
            // first, and a node that finds it held leaves this fire or retry due, for
            // whichever node holds the lease next.
            let session = crate::sync::new_session(integration, Some(&self.node), false, &self.engine.clock);
            let lease = match self.take_sync_lease(&integration.name, session.id).await? {
                Taken::Held(lease) => lease,
                Taken::Busy(holder) => {
                    self.note_busy(&integration.name, &holder);
                    continue;
                }
            };
            // One node syncs each fire and each retry: it moves the marks by
            // compare-and-set, and a node that finds them moved leaves the sync to the one
            // that moved them. The retry mark already names the retry after this one, so a
            // node that dies mid-sync leaves that retry for any node to take.
            let next_fire =
                || cron.find_next_occurrence(&now.to_zoned(zone.clone()), false).ok().map(|t| t.timestamp());
            let fallback = retry_plan(retry_number, now, next_fire()).map(|(n, at)| format!("{n} {}", rfc3339(at)));
            let claimed =
                self.claim_sync_marks(&mark, fire.as_ref(), &retry_mark, retry_text.as_deref(), fallback.as_deref());
            match claimed.await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!("sync {}: this fire or retry was taken by another node", integration.name);
                    lease.release(&self.engine.store).await?;
                    continue;
                }
                Err(e) => {
                    lease.release(&self.engine.store).await?;
                    return Err(e);
                }
            }
            let outcome = self.sync_held(integration, session, lease, &mut crate::sync::NoProgress).await;
            if let Ok(session) = &outcome {
                log_session(integration, session);
            }
            let failure = match &outcome {
                Ok(session) if session.state == SyncState::Succeeded => None,
                Ok(session) => Some(session.error.clone().unwrap_or_else(|| format!("the sync {}", session.state))),
                Err(e) => Some(e.to_string()),
            };
            match failure {
                None => self.advance(&retry_mark, fallback.as_deref(), None).await?,
                Some(why) => {
                    let retry = SyncRetry { mark: &retry_mark, previous: fallback.as_deref(), number: retry_number };
                    self.plan_sync_retry(integration, retry, now, next_fire(), &why).await?
                }
            }
            if let Ok(session) = outcome {
                sessions.push(session);
            }
        }
        Ok(sessions)
    }

    /// After scheduled sync `retry_number` (0: the scheduled one) failed: marks the next
    /// retry in the store and says when, or says none is left before the next fire.
    async fn plan_sync_retry(
        &self,
        integration: &Integration,
        retry: SyncRetry<'_>,
        now: Timestamp,
        next_fire: Option<Timestamp>,
        why: &str,
    ) -> Result<()> {
        let retry_number = retry.number;
        let Some((_, at)) = retry_plan(retry_number, now, next_fire) else {
            let next = next_fire.map(rfc3339).unwrap_or_else(|| "never".into());
            tracing::warn!(
                "scheduled sync {} failed: {why}; no retry is left before its next scheduled time ({next})",
                integration.name
            );
            return self.advance(retry.mark, retry.previous, None).await;
        };
        let plan = format!("{} {}", retry_number + 1, rfc3339(at));
        self.advance(retry.mark, retry.previous, Some(&plan)).await?;
        tracing::warn!(
            "scheduled sync {} failed: {why}; retry {} of {} at {}",
            integration.name,
            retry_number + 1,
            SYNC_RETRY_DELAYS.len(),
            rfc3339(at)
        );
        Ok(())
    }

    /// Moves a due fire's mark and the retry mark on from what this node read; `false`
    /// when another node moved one first (that node syncs it).
    async fn claim_sync_marks(
        &self,
        mark: &Mark,
        fire: Option<&Due>,
        retry_mark: &Mark,
        retry_read: Option<&str>,
        fallback: Option<&str>,
    ) -> Result<bool> {
        let scheduler = &self.engine.store.scheduler;
        if let Some(due) = fire
            && !scheduler.set_mark(mark, due.previous.as_deref(), Some(&rfc3339(due.at))).await?
        {
            return Ok(false);
        }
        Ok(scheduler.set_mark(retry_mark, retry_read, fallback).await?)
    }

    /// Runs one integration now.
    pub async fn sync(&self, integration: &Integration) -> Result<SyncSession> {
        self.sync_with(integration, false).await
    }

    /// Runs one integration now; with `test`, fetches and previews but writes no record.
    pub async fn sync_with(&self, integration: &Integration, test: bool) -> Result<SyncSession> {
        let session = self.sync_observed(integration, test, &mut crate::sync::NoProgress).await?;
        log_session(integration, &session);
        Ok(session)
    }

    /// Runs one integration now under its sync lease, telling `observer` of each page (and
    /// logging nothing: `roster sync` prints the session itself). While another sync of it
    /// runs (on any node), refuses, naming that node and its session.
    pub async fn sync_observed(
        &self,
        integration: &Integration,
        test: bool,
        observer: &mut dyn crate::sync::SyncObserver,
    ) -> Result<SyncSession> {
        let session = crate::sync::new_session(integration, Some(&self.node), test, &self.engine.clock);
        match self.take_sync_lease(&integration.name, session.id).await? {
            Taken::Held(lease) => self.sync_held(integration, session, lease, observer).await,
            Taken::Busy(holder) => Err(Error::Refused(format!(
                "sync {} refused: node {} is running session {} of it (its lease runs to {}); try again once that session has finished (`roster sync show {}`)",
                integration.name,
                holder.node,
                holder.session,
                rfc3339(holder.until),
                holder.session
            ))),
        }
    }

    async fn take_sync_lease(&self, integration: &str, session: Uuid) -> Result<Taken> {
        crate::sync_lease::take(&self.engine.store, integration, &self.node, session, self.lease()).await
    }

    /// A scheduled sync left to the sync that holds the lease: said once per session held.
    fn note_busy(&self, integration: &str, holder: &SyncHolder) {
        let mut seen = self.busy_syncs.lock().expect("busy syncs");
        if seen.insert(integration.to_string(), holder.session) != Some(holder.session) {
            tracing::info!(
                "sync {integration}: due, but node {} is running session {} of it; left until that one ends",
                holder.node,
                holder.session
            );
        }
    }

    /// Runs `session` while this node holds `lease`, renewing it a third of a lease apart
    /// and releasing it at the end. If the lease is lost (it ran out: this node was not
    /// heard from in time, and another took it over), the sync stops there, so two never
    /// run side by side, and the session says why.
    async fn sync_held(
        &self,
        integration: &Integration,
        session: SyncSession,
        mut lease: HeldLease,
        observer: &mut dyn crate::sync::SyncObserver,
    ) -> Result<SyncSession> {
        let store = &self.engine.store;
        let id = session.id;
        let mut sync = Box::pin(async {
            let credential = self.engine.credential(&integration.credential).await?;
            let rate = self.engine.rate_limiter(&integration.credential);
            crate::sync::run_session(store, integration, &credential, rate, &self.engine.clock, session, observer).await
        });
        let lost = loop {
            tokio::select! {
                outcome = &mut sync => {
                    if let Err(e) = lease.release(store).await {
                        tracing::warn!("sync {}: its sync lease was not given up ({e}); it runs out by itself", integration.name);
                    }
                    return outcome;
                }
                _ = tokio::time::sleep(self.lease() / 3) => match lease.renew(store, self.lease()).await {
                    Ok(true) => {}
                    Ok(false) => break "its sync lease ran out and was taken over".to_string(),
                    Err(e) if lease.expired(Timestamp::now()) => break format!("its sync lease could not be renewed ({e}) and ran out"),
                    Err(e) => tracing::warn!("sync {}: could not renew its sync lease: {e}", integration.name),
                },
            }
        };
        drop(sync);
        let why = format!("stopped on node {}: {lost}", self.node);
        crate::sync_lease::interrupt(store, id, &why).await?;
        Err(Error::Refused(format!("sync {} {why}", integration.name)))
    }

    /// The latest fire time at or before now if it has not fired yet, with how many
    /// earlier fire times were skipped since the last one.
    async fn due(&self, cron: &croner::Cron, zone: &TimeZone, mark: &Mark) -> Result<Option<Due>> {
        let now = self.engine.clock.now().to_zoned(zone.clone());
        let Ok(latest) = cron.find_previous_occurrence(&now, true) else { return Ok(None) };
        let latest_ts = latest.timestamp();
        let previous = self.engine.store.scheduler.mark(mark).await?;
        let last: Option<Timestamp> = previous.as_deref().and_then(|s| s.parse().ok());
        match last {
            Some(l) if l >= latest_ts => Ok(None),
            Some(l) => {
                let mut missed = 0;
                let mut t = latest.clone();
                while let Ok(prev) = cron.find_previous_occurrence(&t, false) {
                    if prev.timestamp() <= l || missed >= 10_000 {
                        break;
                    }
                    missed += 1;
                    t = prev;
                }
                Ok(Some(Due { at: latest_ts, missed, previous }))
            }
            None => Ok(Some(Due { at: latest_ts, missed: 0, previous })),
        }
    }

    /// Moves a scheduler mark on from what this scheduler read. If another scheduler moved
    /// it first, theirs stands: the runs both queued were deduplicated by their keys.
    async fn advance(&self, mark: &Mark, read: Option<&str>, value: Option<&str>) -> Result<()> {
        if !self.engine.store.scheduler.set_mark(mark, read, value).await? {
            tracing::debug!("{}: moved on by another scheduler meanwhile; keeping theirs", mark.key());
        }
        Ok(())
    }

    /// Starts runs for record events (created / updated) that workflows listen to.
    /// The first time, it starts at the newest event: history does not trigger.
    pub async fn dispatch_events(&self) -> Result<usize> {
        let store = &self.engine.store;
        let read = store.scheduler.mark(&Mark::EventCursor).await?;
        let mut cursor: Option<uuid::Uuid> = match read.as_deref() {
            Some(c) => c.parse().ok(),
            None => {
                let mut last = None;
                loop {
                    let batch = store.events.events(last, 1000).await?;
                    match batch.last() {
                        Some(e) => last = Some(e.id),
                        None => break,
                    }
                }
                let start = last.map(|id| id.to_string()).unwrap_or_default();
                self.advance(&Mark::EventCursor, None, Some(&start)).await?;
                return Ok(0);
            }
        };
        let catalog = self.catalog();
        let listeners: Vec<&Arc<Workflow>> = catalog
            .workflows
            .values()
            .filter(|w| matches!(w.begin.trigger, Trigger::Created | Trigger::Updated { .. }))
            .collect();
        let mut started = 0;
        loop {
            let events = store.events.events(cursor, 500).await?;
            if events.is_empty() {
                break;
            }
            for event in &events {
                for wf in &listeners {
                    if !listens(wf, event) {
                        continue;
                    }
                    let Some(record) = store.records.record(event.record_id).await? else { continue };
                    // A workflow whose rules cannot be evaluated skips this event; the
                    // other workflows still get it and the cursor still moves on.
                    match self.engine.rules_refuse(wf, &record) {
                        Ok(None) => {}
                        Ok(Some(_)) => continue,
                        Err(e) => {
                            tracing::error!("{}: event {} not dispatched: {e}", wf.name, event.id);
                            continue;
                        }
                    }
                    let dedupe = format!("wf:{}:rec:{}:event:{}", wf.name, record.id, event.id);
                    let trigger = RunTrigger::Event { kind: event.kind, id: event.id };
                    let today = self.engine.clock.today();
                    if self.engine.create_run_once(wf, &record, trigger, &dedupe, today).await?.is_some() {
                        started += 1;
                    }
                }
            }
            let from = cursor.map(|c| c.to_string()).unwrap_or_default();
            cursor = events.last().map(|e| e.id);
            let to = cursor.map(|c| c.to_string()).unwrap_or_default();
            self.advance(&Mark::EventCursor, Some(&from), Some(&to)).await?;
        }
        if started > 0 {
            self.wake();
        }
        Ok(started)
    }

    /// How long this node's claims hold without a heartbeat (default 30 s). Set once, before
    /// the workers start; a dead node's runs are taken over this long after its last beat.
    pub fn set_lease(&self, lease: Duration) {
        let _ = self.lease.set(lease.max(Duration::from_secs(1)));
    }

    fn lease(&self) -> Duration {
        *self.lease.get().unwrap_or(&LEASE)
    }

    /// This process's name in leases and heartbeats.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Every node that shares the store, alive ones first.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        node_statuses(&self.engine.store, self.lease(), Some(&self.node)).await
    }

    /// Runs queued runs with `concurrency` workers. With `until_idle`, returns once the
    /// queue is empty and no run is in flight; otherwise runs until the engine stops.
    pub async fn work(self: &Arc<Self>, concurrency: usize, until_idle: bool) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat());
        let poll = tokio::spawn(self.clone().poll());
        for _ in 0..concurrency.max(1) {
            let me = self.clone();
            tasks.spawn(async move { me.worker(until_idle).await });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::Internal(format!("a worker panicked: {e}")));
                }
            }
        }
        // Awaited after the abort so the heartbeat's hold on the store ends before this
        // returns (a sled folder can be opened again only once every handle is gone).
        heartbeat.abort();
        poll.abort();
        let _ = heartbeat.await;
        let _ = poll.await;
        first_error.map_or(Ok(()), Err)
    }

    /// What a worker asks the queue for: a run this node may take now, within every
    /// workflow's `concurrency` (counted by the store across all claimers).
    fn claim_request(&self) -> ClaimRequest {
        let per_workflow =
            self.catalog().workflows.values().filter_map(|w| Some((w.name.clone(), w.concurrency?))).collect();
        ClaimRequest {
            owner: self.node.clone(),
            // Leases are about processes staying alive, so they use the real clock even
            // when `--now` makes the rest of Roster believe in another day.
            now: Timestamp::now(),
            lease: self.lease(),
            limits: ConcurrencyLimits { per_workflow },
            trigger: self.only_trigger.get().cloned(),
        }
    }

    /// Renews this node's leases until the engine stops, a third of a lease apart, so a
    /// run this node is working on is never taken for abandoned; marks the sessions of
    /// syncs that stopped with their node interrupted.
    async fn heartbeat(self: Arc<Self>) {
        let queue = &self.engine.store.queue;
        loop {
            let now = Timestamp::now();
            if let Err(e) = queue.beat(&self.node, now).await {
                tracing::warn!("could not record this node's heartbeat: {e}");
            }
            if let Err(e) = queue.renew_leases(&self.node, now + self.lease()).await {
                tracing::warn!("could not renew this node's run leases: {e}");
            }
            // Sessions of syncs whose node died are over; a live node's are not touched. A
            // dead node's session is among the newest: it is found within a lease.
            if let Err(e) = crate::sync_lease::interrupt_abandoned(&self.engine.store, 20).await {
                tracing::warn!("could not look for interrupted syncs: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.lease() / 3) => {}
                _ = self.engine.stopped() => return,
            }
        }
    }

    /// Wakes one idle worker every [`POLL`] to look for work nobody announces: timers that
    /// came due, leases that expired with their node. One per node, not one per worker, so
    /// idle nodes cost the store a claim each per poll whatever their concurrency; a worker
    /// that finds something wakes the next.
    async fn poll(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => self.wake.notify_one(),
                _ = self.engine.stopped() => return,
            }
        }
    }

    async fn worker(self: Arc<Self>, until_idle: bool) -> Result<()> {
        let mut claim_wait = CLAIM_RETRY_FIRST;
        loop {
            if self.engine.is_stopping() {
                return Ok(());
            }
            self.busy.fetch_add(1, Ordering::SeqCst);
            let claimed = self.engine.store.queue.claim(&self.claim_request()).await;
            let run = match claimed {
                Ok(Some(run)) => {
                    claim_wait = CLAIM_RETRY_FIRST;
                    // There may be more: an idle worker looks too, and wakes the next if it
                    // finds one (a store's notification wakes one worker, not all).
                    self.wake.notify_one();
                    run
                }
                Ok(None) => {
                    let others_busy = self.busy.fetch_sub(1, Ordering::SeqCst) > 1;
                    if until_idle && !others_busy && self.queue_empty().await? {
                        self.wake();
                        return Ok(());
                    }
                    // Woken by this process queueing a run, by another node's (a backend
                    // several nodes share tells), by a worker that claimed one, or by the
                    // node's poll for due timers and expired leases (`poll`).
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = self.engine.store.queue.wait_for_work(IDLE_WAIT) => {}
                    }
                    continue;
                }
                Err(e) => {
                    self.busy.fetch_sub(1, Ordering::SeqCst);
                    if until_idle {
                        return Err(e.into());
                    }
                    // A serve worker outlives a store that is away for a while (a database
                    // restart, a full disk): ending would leave the node alive, beating,
                    // and running nothing.
                    tracing::error!("cannot claim a run: {e}; trying again in {claim_wait:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(claim_wait) => {}
                        _ = self.engine.stopped() => {}
                    }
                    claim_wait = (claim_wait * 2).min(CLAIM_RETRY_MAX);
                    continue;
                }
            };
            let (id, held) = (run.id, run.lease.as_ref().map(|l| l.token));
            if let Err(e) = self.execute(run).await {
                tracing::error!("run {id}: {e}");
                if e.is_retryable() {
                    self.pause(id, held).await;
                }
            }
            // Busy until a paused run is back in the queue, so idle workers do not leave early.
            self.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A store write failed (a full disk, say): the run keeps its last durable step and
    /// goes back to the queue once the store accepts writes again, unless another claim
    /// took it meanwhile (this node's lease, `held`, ran out while the store was away):
    /// that claimer has it now, and putting it back on the queue would let a third start
    /// it beside them.
    async fn pause(&self, id: uuid::Uuid, held: Option<Uuid>) {
        let mut wait = Duration::from_millis(200);
        loop {
            if self.engine.is_stopping() {
                return;
            }
            let requeued = match self.engine.store.runs.run(id).await {
                Ok(Some(run)) if run.state == RunState::Running && run.lease.as_ref().map(|l| l.token) != held => {
                    tracing::warn!("run {id} was taken over by {} while the store was away", lease_owner(&run));
                    return;
                }
                // A run that rests (waiting for its timer, say) is not put back early.
                Ok(Some(mut run)) if !run.state.is_resting() => {
                    run.state = RunState::Queued;
                    self.engine.store.runs.save_step(&run, None, None).await.map(|_| ())
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            match requeued {
                Ok(_) => {
                    tracing::warn!("run {id} resumes: the store accepts writes again");
                    self.wake();
                    return;
                }
                Err(e) => tracing::error!("run {id} is paused: {e}; retrying in {wait:?}"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    async fn execute(&self, run: Run) -> Result<Run> {
        let wf = match self.workflow_version(&run.workflow_hash).await {
            Ok(wf) => wf,
            Err(e) => {
                let mut run = run;
                run.state = RunState::Failed;
                run.error = Some(e.to_string());
                self.engine.store.runs.save_step(&run, None, None).await?;
                return Err(e);
            }
        };
        let (id, started) = (run.id, std::time::Instant::now());
        tracing::info!(run = %id, workflow = %run.workflow, person = %run.record_label, "run started ({})", run.trigger);
        let run = self.engine.drive(&wf, run, &mut Quiet).await?;
        let took = started.elapsed().as_millis() as u64;
        let state = run.state.as_str();
        // The error stays in the run (`roster runs show`): a vendor's answer may be in it.
        tracing::info!(run = %id, workflow = %run.workflow, person = %run.record_label, state, duration_ms = took, "run {state} in {took} ms");
        Ok(run)
    }
}

/// A batch (`roster run WORKFLOW --all`) as queued: one run per person the rules accept.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchStart {
    pub batch: Uuid,
    pub workflow: String,
    /// The trigger its runs carry (`batch:<id>`), to follow them by.
    pub trigger: RunTrigger,
    /// An unfinished batch of this workflow was resumed rather than a new one started.
    pub resumed: bool,
    /// Runs queued now (a resumed batch queues only people it did not have yet).
    pub queued: usize,
    pub selected: usize,
    pub total_records: usize,
}

impl Service {
    /// Queues a batch of `wf`: an unfinished batch of the workflow (one with runs still
    /// queued or running) is resumed instead of started again; each person gets one run
    /// per batch however often this is called.
    pub async fn queue_batch(&self, wf: &Workflow) -> Result<BatchStart> {
        let store = &self.engine.store;
        let mark = Mark::Batch { workflow: wf.name.clone() };
        let earlier = store.scheduler.mark(&mark).await?;
        // A mark that is not a batch id (none was ever written so) starts a new batch.
        let unfinished = match earlier.as_deref().and_then(|id| id.parse::<Uuid>().ok()) {
            Some(id) => {
                let filter = crate::store::RunFilter { trigger: Some(RunTrigger::Batch(id)), ..Default::default() };
                let runs = store.runs.runs(&filter).await?;
                runs.iter().any(|r| !r.state.is_finished() && r.state != RunState::NeedsAttention).then_some(id)
            }
            None => None,
        };
        let (batch, resumed) = match unfinished {
            Some(id) => (id, true),
            None => {
                let id = Uuid::now_v7();
                if store.scheduler.set_mark(&mark, earlier.as_deref(), Some(&id.to_string())).await? {
                    (id, false)
                } else {
                    // Another `run --all` started a batch this instant: join it.
                    let theirs = store.scheduler.mark(&mark).await?.and_then(|t| t.parse().ok());
                    (theirs.unwrap_or(id), true)
                }
            }
        };
        let trigger = RunTrigger::Batch(batch);
        let total_records = store.records.count_records().await?;
        let today = self.engine.clock.today();
        let selected = self.select_on(wf, today).await?;
        let mut queued = 0;
        for record in &selected {
            let dedupe = format!("wf:{}:rec:{}:batch:{batch}", wf.name, record.id);
            if self.engine.create_run_once(wf, record, trigger.clone(), &dedupe, today).await?.is_some() {
                queued += 1;
            }
        }
        if queued > 0 {
            self.wake();
        }
        Ok(BatchStart {
            batch,
            workflow: wf.name.clone(),
            trigger,
            resumed,
            queued,
            selected: selected.len(),
            total_records,
        })
    }
}

/// Every node that shares `store`, alive or not, alive ones first: a node is alive while its
/// last heartbeat is younger than `lease` (after that its runs are taken over).
pub async fn node_statuses(store: &Store, lease: Duration, this_process: Option<&str>) -> Result<Vec<NodeStatus>> {
    let now = Timestamp::now();
    let lease = jiff::SignedDuration::try_from(lease).unwrap_or(jiff::SignedDuration::from_secs(30));
    let mut nodes: Vec<NodeStatus> = store
        .queue
        .nodes()
        .await?
        .into_iter()
        .map(|beat| NodeStatus {
            alive: now.duration_since(beat.last_heartbeat) < lease,
            this_process: this_process == Some(beat.node.as_str()),
            node: beat.node,
            last_heartbeat: beat.last_heartbeat,
            runs_held: beat.runs_held,
        })
        .collect();
    nodes.sort_by(|a, b| b.alive.cmp(&a.alive).then(b.last_heartbeat.cmp(&a.last_heartbeat)));
    Ok(nodes)
}

/// A node sharing the store, as `roster nodes` and `GET /v1/nodes` show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub alive: bool,
    pub last_heartbeat: Timestamp,
    pub runs_held: usize,
    /// The node answering.
    pub this_process: bool,
}

/// How long a claimed run stays this node's without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(30);

/// Renews every lease `owner` holds, a third of `lease` apart, until the returned task is
/// aborted: what keeps a run a process drives itself (`roster run --user`) its own.
pub fn hold_leases(store: Store, owner: String, lease: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            if let Err(e) = store.queue.renew_leases(&owner, Timestamp::now() + lease).await {
                tracing::warn!("could not renew this process's run leases: {e}");
            }
        }
    })
}

/// How often a node with idle workers looks for due timers and expired leases.
const POLL: Duration = Duration::from_millis(200);

/// How long a serve worker waits to claim again after a claim failed, doubling with each
/// failure in a row up to `CLAIM_RETRY_MAX`.
const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(200);
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(5);

/// A finished sync in the log: its counts, its error and notes (secrets were scrubbed).
fn log_session(integration: &Integration, session: &SyncSession) {
    tracing::info!(
        "sync {}: {} fetched, {} created, {} updated, {} failed{}",
        integration.name,
        session.counts.fetched,
        session.counts.created,
        session.counts.updated,
        session.counts.failed,
        session.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
    );
    for note in &session.notes {
        tracing::warn!("sync {}: {note}", integration.name);
    }
}

/// Who holds a run's lease, for messages.
fn lease_owner(run: &Run) -> &str {
    run.lease.as_ref().map_or("another claimer", |l| l.owner.as_str())
}

/// The longest an idle worker waits without being woken: only a lost wake-up makes it
/// matter.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// This process's name in leases: host, process id and a random part, so a restarted
/// process never passes for the one before it.
pub fn node_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "local".into());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &nonce[..8])
}

/// A schedule's fire time that has not been handled yet.
struct Due {
    at: Timestamp,
    /// Earlier fire times skipped since the last handled one (Roster was not running).
    missed: usize,
    /// The mark as read, for the compare-and-set that records this fire.
    previous: Option<String>,
}

/// Which retry of a failed scheduled sync comes next, and its mark as read.
struct SyncRetry<'a> {
    mark: &'a Mark,
    previous: Option<&'a str>,
    /// 0: the scheduled sync itself failed.
    number: usize,
}

/// How long after a failed scheduled sync each retry waits (from the failure before it).
const SYNC_RETRY_DELAYS: [jiff::SignedDuration; 5] = [
    jiff::SignedDuration::from_mins(5),
    jiff::SignedDuration::from_mins(15),
    jiff::SignedDuration::from_hours(1),
    jiff::SignedDuration::from_hours(3),
    jiff::SignedDuration::from_hours(6),
];

/// A retry mark, `"<number of the next retry> <when it is due>"`; empty when none waits.
/// The retry that follows retry `number` (0: the scheduled sync) of a sync that fails at
/// `now`: its number and time, unless none is left before the next scheduled time.
fn retry_plan(number: usize, now: Timestamp, next_fire: Option<Timestamp>) -> Option<(usize, Timestamp)> {
    let at = SYNC_RETRY_DELAYS.get(number).and_then(|delay| now.checked_add(*delay).ok())?;
    next_fire.is_none_or(|next| at < next).then_some((number + 1, at))
}

fn parse_retry(text: &str) -> Option<(usize, Timestamp)> {
    let (done, at) = text.split_once(' ')?;
    Some((done.parse().ok()?, at.parse().ok()?))
}

/// A schedule's cron and time zone (UTC when it names none).
fn schedule_clock(schedule: &Schedule) -> Result<(croner::Cron, TimeZone)> {
    let cron: croner::Cron =
        schedule.cron.parse().map_err(|e| Error::Refused(format!("cron `{}` cannot be parsed: {e}", schedule.cron)))?;
    Ok((cron, schedule.zone().map_err(Error::Refused)?))
}

/// Whether the schedule fires more than once on the local day of `fire` (hourly, `0 9,17 * * *`).
fn fires_again_that_day(cron: &croner::Cron, fire: &jiff::Zoned) -> bool {
    let Ok(start) = fire.date().to_zoned(fire.time_zone().clone()) else { return false };
    let Ok(first) = cron.find_next_occurrence(&start, true) else { return false };
    cron.find_next_occurrence(&first, false).is_ok_and(|second| second.date() == fire.date())
}

/// Whether `wf`'s trigger listens to `event`. A workflow never triggers itself.
fn listens(wf: &Workflow, event: &ChangeEvent) -> bool {
    if event.source == format!("workflow:{}", wf.name) {
        return false;
    }
    match &wf.begin.trigger {
        Trigger::Created => event.kind == EventKind::Created,
        Trigger::Updated { fields } => {
            event.kind == EventKind::Updated
                && (fields.is_empty() || fields.iter().any(|f| event.changes.contains_key(f)))
        }
        _ => false,
    }
}

/// A trigger in words: `manual`, `record created`, `record updated (status, team)`,
/// `schedule 0 9 * * * (America/Los_Angeles)`.
pub fn describe_trigger(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Manual => "manual".into(),
        Trigger::Created => "record created".into(),
        Trigger::Updated { fields } if fields.is_empty() => "record updated".into(),
        Trigger::Updated { fields } => format!("record updated ({})", fields.join(", ")),
        Trigger::Schedule(schedule) => format!("schedule {}", describe_schedule(schedule)),
    }
}

/// `0 9 * * * (America/Los_Angeles)`.
pub fn describe_schedule(schedule: &Schedule) -> String {
    format!("{} ({})", schedule.cron, schedule.timezone.as_deref().unwrap_or("UTC"))
}

/// The first fire time of `schedule` after `now`; `None` when it never fires again.
pub fn next_fire(schedule: &Schedule, now: Timestamp) -> Option<Timestamp> {
    let (cron, zone) = schedule_clock(schedule).ok()?;
    cron.find_next_occurrence(&now.to_zoned(zone), false).ok().map(|t| t.timestamp())
}
