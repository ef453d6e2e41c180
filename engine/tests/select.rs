//! Selection (`Service::select_on`, what a schedule fire and `run --all` use) through the
//! field index returns exactly what reading every record returns, for every rule op that is
//! looked up by key, on both backends, over values in the forms people's data comes in.

mod postgres_schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use jiff::civil::Date;
use roster_blocks::kinds::CompileContext;
use roster_engine::clock::Clock;
use roster_engine::model::Record;
use roster_engine::run::Engine;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::{KeyQuery, RecordStore, RecordWrite, RecordWritten, SledStore, Store, StoreResult};
use roster_engine::workflow::Workflow;
use serde_json::{Map, Value, json};
use uuid::Uuid;

const NOW: &str = "2027-03-01T10:00:00Z";

/// The records concern of a store, counting the scans of every record.
struct CountingScans {
    inner: Arc<dyn RecordStore>,
    scans: AtomicUsize,
}

#[async_trait]
impl RecordStore for CountingScans {
    async fn record(&self, id: Uuid) -> StoreResult<Option<Record>> {
        self.inner.record(id).await
    }
    async fn records_by_keys(&self, queries: &[KeyQuery]) -> StoreResult<Vec<Record>> {
        self.inner.records_by_keys(queries).await
    }
    async fn index_field(&self, field: &str) -> StoreResult<()> {
        self.inner.index_field(field).await
    }
    async fn scan_records(&self, visit: &mut (dyn FnMut(Record) -> bool + Send)) -> StoreResult<()> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.inner.scan_records(visit).await
    }
    async fn count_records(&self) -> StoreResult<usize> {
        self.inner.count_records().await
    }
    async fn write_records(&self, writes: Vec<RecordWrite>) -> StoreResult<Vec<RecordWritten>> {
        self.inner.write_records(writes).await
    }
}

/// Values of `f` (and `g`) in every form: dates written each way the date ops read them and
/// ways they do not, timestamps whose UTC day is not their written day, emails in any case,
/// padded and blank texts, numbers, booleans, long and non-ASCII texts, lists, null.
fn values() -> Vec<Value> {
    let texts = [
        "2027-02-26",
        "2027-02-27",
        "2027-02-28",
        "2027-03-01",
        "2027-03-02",
        "2027-03-03",
        "2027-03-04",
        "2026-12-31",
        "2028-06-01",
        " 2027-03-01 ",
        "20270301",
        "20270227",
        "20270303",
        "20260301",
        "20270301T100000Z",
        "2027-03-01T10:00:00Z",
        "2027-03-01T09:00:00Z",
        "2027-03-01T23:30:00-05:00",
        "2027-03-02T01:00:00+05:00",
        "2027-03-03T00:00:00+25:59",
        "2027-02-27T23:59:59-25:59",
        "2027-03-01 10:00",
        "2027-03-01t11:00:00z",
        "+002027-03-01",
        "+002027-03-05",
        "-000044-03-15",
        "03/01/2027",
        "1 March 2027",
        "ACTIVE",
        "active",
        " ACTIVE",
        "Ann@Acme.test",
        "ann@acme.test",
        "ANN",
        "Ann O'Neil",
        "Anna",
        "5",
        "true",
        "True",
        "TRUE",
        "",
        "   ",
        "100%_off\\",
        "100%",
        "100_",
        "École",
        "école",
        "日本語",
        "ΣΟΦΙΑ@x.test",
        "a\0b",
    ];
    let mut out: Vec<Value> = texts.into_iter().map(Value::from).collect();
    out.push(Value::String("L".repeat(700)));
    out.extend([json!(5), json!(20270301), json!(true), json!(false), json!(null), json!(["ACTIVE"]), json!({})]);
    out
}

/// Workflows whose rules are each looked up by key, and two that read every record.
fn workflows() -> Vec<Arc<Workflow>> {
    let rules: Vec<Value> = vec![
        json!({"field": "f", "op": "equals", "value": "<<today>>"}),
        json!({"field": "f", "op": "equals", "value": "ACTIVE"}),
        json!({"field": "f", "op": "equals", "value": "ann@acme.test"}),
        json!({"field": "f", "op": "equals", "value": "True"}),
        json!({"field": "f", "op": "in", "value": ["ACTIVE", "ANN@acme.test", "日本語", "false"]}),
        json!({"field": "f", "op": "starts_with", "value": "Ann"}),
        json!({"field": "f", "op": "starts_with", "value": "100%"}),
        json!({"field": "f", "op": "starts_with", "value": "100_"}),
        json!({"field": "f", "op": "starts_with", "value": "é"}),
        json!({"field": "f", "op": "starts_with", "value": "LLLL"}),
        json!({"field": "f", "op": "before", "value": "<<today>>"}),
        json!({"field": "f", "op": "on_or_before", "value": "<<today>>"}),
        json!({"field": "f", "op": "after", "value": "<<today>>"}),
        json!({"field": "f", "op": "on_or_after", "value": "<<today>>"}),
        json!({"field": "f", "op": "on_or_before", "value": "<<now>>"}),
        json!({"field": "f", "op": "after", "value": "2027-03-01T09:30:00Z"}),
        json!({"field": "record.f", "op": "before", "value": "2027-03-02"}),
        json!([
            {"field": "f", "op": "on_or_after", "value": "2027-02-27"},
            {"field": "f", "op": "before", "value": "2027-03-03"},
            {"field": "g", "op": "is_empty"},
        ]),
        json!({"any": [
            {"field": "f", "op": "equals", "value": "ACTIVE"},
            {"field": "g", "op": "on_or_before", "value": "<<today>>"},
        ]}),
        // `today` is the run's, not the record's field: never looked up in the index.
        json!({"field": "today", "op": "equals", "value": "2027-03-01"}),
        json!({"field": "f", "op": "contains", "value": "A"}),
    ];
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    rules
        .into_iter()
        .enumerate()
        .map(|(i, rules)| {
            let source = json!({
                "name": format!("w{i}"),
                "begin": {"trigger": {"schedule": "daily"}, "rules": rules, "next": "s"},
                "blocks": {"s": {"type": "update", "set": {"seen": "yes"}}},
            });
            Arc::new(Workflow::compile(&source.to_string(), "test.json", &cx).expect("the workflow compiles"))
        })
        .collect()
}

/// Fills `store` with a record per value of `f` (with `g` the next value along, and one
/// record with `today` set), indexes what the rules may look up, and checks that every
/// workflow's selection is what checking the rules on every record finds.
async fn selection_matches_a_full_scan(store: Store) {
    let values = values();
    let mut writes = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let mut changes = Map::new();
        changes.insert("email".into(), json!(format!("p{i}@acme.test")));
        changes.insert("f".into(), value.clone());
        changes.insert("g".into(), values[(i + 1) % values.len()].clone());
        writes.push(RecordWrite { id: None, changes, source: "import".into(), at: NOW.into() });
    }
    let mut changes = Map::new();
    changes.insert("email".into(), json!("nof@acme.test"));
    changes.insert("today".into(), json!("2027-03-01"));
    writes.push(RecordWrite { id: None, changes, source: "import".into(), at: NOW.into() });
    store.records.write_records(writes).await.unwrap();

    let counting = Arc::new(CountingScans { inner: store.records.clone(), scans: AtomicUsize::new(0) });
    let store = Store { records: counting.clone(), ..store };
    let workflows = workflows();
    let catalog = Catalog {
        workflows: workflows.iter().map(|wf| (wf.name.clone(), wf.clone())).collect::<BTreeMap<_, _>>(),
        integrations: BTreeMap::new(),
    };
    let engine = Arc::new(Engine::new(store.clone(), None, Clock::parse(NOW).unwrap()));
    let service = Service::new(engine.clone(), catalog, roster_engine::presets::built_in());
    assert_eq!(service.prepare_indexes().await.unwrap(), ["f", "g"]);

    let today: Date = "2027-03-01".parse().unwrap();
    let label = |records: &[Record]| records.iter().map(|r| r.fields["email"].to_string()).collect::<Vec<_>>();
    let (mut pushed, mut scanned) = (0, 0);
    for wf in &workflows {
        // The scan path: the rules, checked on every record as a run's start checks them.
        let mut every = Vec::new();
        store
            .records
            .scan_records(&mut |r| {
                every.push(r);
                true
            })
            .await
            .unwrap();
        let mut check = engine.rule_checker(wf, today);
        let expected: Vec<Record> = every.into_iter().filter(|r| check(r).unwrap()).collect();

        let before = counting.scans.load(Ordering::SeqCst);
        let selected = service.select_on(wf, today).await.unwrap();
        let read_all = counting.scans.load(Ordering::SeqCst) > before;
        assert_eq!(label(&selected), label(&expected), "{}: {}", wf.name, wf.begin.rules.as_ref().unwrap());
        if read_all { scanned += 1 } else { pushed += 1 }
    }
    assert_eq!((pushed, scanned), (workflows.len() - 2, 2), "all but the last two are looked up by key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_through_the_sled_index_is_what_a_full_scan_selects() {
    let dir = tempfile::tempdir().unwrap();
    selection_matches_a_full_scan(Store::new(Arc::new(SledStore::open(dir.path()).unwrap()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_through_the_postgres_index_is_what_a_full_scan_selects() {
    let schema = postgres_schema::Schema::new();
    selection_matches_a_full_scan(Store::new(Arc::new(schema.store().await))).await;
}
