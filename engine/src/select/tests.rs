use std::ops::Bound;

use roster_blocks::diag::Diagnostics;
use serde_json::{Map, json};

use super::*;
use crate::model::Record;

const TODAY: &str = "2027-03-01";
const NOW: &str = "2027-03-01T10:00:00Z";

fn time() -> Value {
    json!({"now": NOW, "today": TODAY})
}

fn rules(value: Value) -> Condition {
    let mut diags = Diagnostics::new();
    Condition::compile(&value, "rules", &mut diags).unwrap_or_else(|| panic!("{value}: {:?}", diags.errors()))
}

fn rule(field: &str, op: &str, value: Value) -> Condition {
    rules(json!({"field": field, "op": op, "value": value}))
}

fn record(field: &str, value: &Value) -> Record {
    let mut fields = Map::new();
    fields.insert(field.into(), value.clone());
    Record {
        id: uuid::Uuid::now_v7(),
        fields,
        provenance: Default::default(),
        version: 1,
        created_at: "t".into(),
        updated_at: "t".into(),
    }
}

/// What the rules see when a run of `record` starts (the record's fields, `now`, `today`).
fn accepted(rules: &Condition, record: &Record) -> bool {
    let mut scope = record.fields.clone();
    scope.insert("record".into(), Value::Object(record.fields.clone()));
    scope.insert("now".into(), json!(NOW));
    scope.insert("today".into(), json!(TODAY));
    rules.evaluate(&Value::Object(scope)).unwrap()
}

/// Values in the forms people's data comes in: dates written every way the date ops read
/// (and some they do not), emails in any case, padded texts, numbers, booleans, long and
/// odd texts.
fn values() -> Vec<Value> {
    let mut texts: Vec<String> = [
        "2027-02-26",
        "2027-02-27",
        "2027-02-28",
        "2027-03-01",
        "2027-03-02",
        "2027-03-03",
        "2027-03-04",
        "2026-12-31",
        "2028-01-01",
        "0001-01-01",
        "9999-12-31",
        " 2027-03-01 ",
        "20270301",
        "20270227",
        "20270303",
        "20260301",
        "20280301",
        "20270301T100000Z",
        "2027-03-01T10:00:00Z",
        "2027-03-01T23:30:00-05:00",
        "2027-03-02T01:00:00+05:00",
        "2027-03-03T00:00:00+25:59",
        "2027-02-27T23:59:59-25:59",
        "2027-03-01 10:00",
        "2027-03-01t09:00:00z",
        "2027-03-01T10:00:00[America/New_York]",
        "2027-03-03T00:00:00",
        "+002027-03-01",
        "+002027-02-26",
        "+002027-03-05",
        "-000044-03-15",
        "03/01/2027",
        "1 March 2027",
        "2027-3-1",
        "ACTIVE",
        "active",
        " ACTIVE",
        "ACTIVE ",
        "Ann@Acme.test",
        "ann@acme.test",
        " ann@ACME.test ",
        "ANN",
        "Ann O'Neil",
        "ann",
        "Anna",
        "5",
        "05",
        "5.0",
        "true",
        "TRUE",
        "True",
        "false",
        "",
        "   ",
        "100%_off\\",
        "100%",
        "100_",
        "ÉCOLE",
        "école",
        "Émile",
        "ΣΟΦΙΑ@x.test",
        "σοφια@x.test",
        "日本",
        "日本語",
        "\u{10FFFF}",
        "a\u{10FFFF}b",
        "a\0b",
        "a",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    texts.push("L".repeat(600));
    texts.push(format!("{}@x.test", "L".repeat(600)));
    let mut out: Vec<Value> = texts.into_iter().map(Value::String).collect();
    out.extend([json!(5), json!(5.0), json!(20270301), json!(true), json!(false), json!(null), json!([]), json!({})]);
    out.extend([json!(["ACTIVE"]), json!({"a": 1})]);
    out
}

/// Rules of every pushable op, with the values that test their edges.
fn pushable_rules() -> Vec<Condition> {
    let mut out = Vec::new();
    for value in [json!("ACTIVE"), json!("<<today>>"), json!("ann@acme.test"), json!("ANN@Acme.TEST"), json!("True")] {
        out.push(rule("f", "equals", value));
    }
    out.push(rule("f", "equals", json!(" ACTIVE ")));
    out.push(rule("f", "in", json!(["ACTIVE", "ann@ACME.test", "false", "日本"])));
    out.push(rule("f", "in", json!([])));
    out.push(rule("f", "in", json!("<<today>>")));
    for prefix in
        ["A", "ann", "ANN", "Ann@", "100%", "100_", "100%_off\\", "É", "é", "日本", "\u{10FFFF}", "a", "LLL", "2027"]
    {
        out.push(rule("f", "starts_with", json!(prefix)));
    }
    out.push(rule("f", "starts_with", json!(5)));
    for op in ["before", "after", "on_or_before", "on_or_after"] {
        for value in ["<<today>>", "<<now>>", "2027-03-01T23:30:00-05:00", "0002-01-03", "9999-12-28"] {
            out.push(rule("f", op, json!(value)));
        }
    }
    out
}

#[test]
fn every_pushable_rule_becomes_a_lookup() {
    for rules in pushable_rules() {
        assert!(candidates(&rules, &time()).is_some(), "{rules} is looked up");
    }
}

/// The one promise a lookup makes: it finds every record the rules accept (the rules then
/// drop the rest), for values in every form.
#[test]
fn a_lookup_finds_every_record_its_rules_accept() {
    let values = values();
    for rules in pushable_rules() {
        let queries = candidates(&rules, &time()).expect("a lookup");
        for value in &values {
            let r = record("f", value);
            if accepted(&rules, &r) {
                assert!(
                    queries.iter().any(|q| q.accepts(&r)),
                    "{rules}: {value} is accepted but not looked up: {queries:?}"
                );
            }
        }
    }
}

#[test]
fn a_lookup_of_a_date_reads_few_keys_beside_the_matching_ones() {
    let queries = candidates(&rule("end_date", "on_or_before", json!("<<today>>")), &time()).unwrap();
    let found = |text: &str| queries.iter().any(|q| q.accepts(&record("end_date", &json!(text))));
    assert!(found("2027-03-01") && found("2020-01-01") && found("20270301"));
    assert!(!found("2027-03-04") && !found("2027-06-01") && !found("2028-01-01") && !found("20270304"));
    assert!(!found("ACTIVE") && !found("not a date"), "texts that are no date are left out");

    let queries = candidates(&rule("end_date", "after", json!("<<today>>")), &time()).unwrap();
    let found = |text: &str| queries.iter().any(|q| q.accepts(&record("end_date", &json!(text))));
    assert!(found("2027-03-02") && found("2030-01-01") && found("+002027-03-05"));
    assert!(!found("2027-02-26") && !found("2020-01-01") && !found("20260301"));
}

#[test]
fn rules_that_an_index_cannot_answer_read_every_record() {
    let t = time();
    for rules in [
        rule("f", "equals", json!("5")),
        rule("f", "equals", json!(5)),
        rule("f", "equals", json!(true)),
        rule("f", "equals", json!("  ")),
        rule("f", "equals", json!("<<now>>")),
        rule("f", "in", json!(["ACTIVE", "7"])),
        rule("f", "starts_with", json!(" A")),
        rule("f", "starts_with", json!("A ")),
        rule("f", "starts_with", json!("ΣΟ")),
        rule("f", "not_equals", json!("ACTIVE")),
        rule("f", "contains", json!("A")),
        rule("f", "ends_with", json!("E")),
        rule("f", "greater_than", json!(5)),
        rule("f", "matches", json!("^A")),
        rules(json!({"field": "f", "op": "is_not_empty"})),
        rule("f", "after", json!("0000-01-01")),
        rule("f", "before", json!("9999-12-30")),
        rule("f", "equals", json!("<<f>>")),
        rule("steps.x", "equals", json!("ACTIVE")),
        rule("today", "equals", json!("ACTIVE")),
        rules(json!({"not": {"field": "f", "op": "equals", "value": "ACTIVE"}})),
        rules(
            json!({"any": [{"field": "f", "op": "equals", "value": "A"}, {"field": "g", "op": "contains", "value": "B"}]}),
        ),
        rules(json!([])),
    ] {
        assert!(candidates(&rules, &t).is_none(), "{rules} reads every record");
    }
}

#[test]
fn a_conjunction_looks_up_its_most_selective_rule_and_a_disjunction_all_of_its_branches() {
    let t = time();
    let all = rules(json!([
        {"field": "end_date", "op": "on_or_before", "value": "<<today>>"},
        {"field": "name", "op": "starts_with", "value": "An"},
        {"field": "status", "op": "in", "value": ["A", "B"]},
        {"field": "onboarded_at", "op": "is_empty"},
        {"field": "start_date", "op": "equals", "value": "<<today>>"},
    ]));
    let queries = candidates(&all, &t).unwrap();
    assert_eq!(queries, [KeyQuery { field: "start_date".into(), matches: KeyMatch::OneOf(vec![TODAY.into()]) }]);
    let without_equals = rules(json!([
        {"field": "end_date", "op": "on_or_before", "value": "<<today>>"},
        {"field": "name", "op": "starts_with", "value": "An"},
    ]));
    let queries = candidates(&without_equals, &t).unwrap();
    let prefixes = ["An", "an"].map(|p| KeyQuery { field: "name".into(), matches: KeyMatch::StartsWith(p.into()) });
    assert_eq!(queries, prefixes, "and its lowercase, as emails are kept");

    let any = rules(json!({"any": [
        {"field": "status", "op": "equals", "value": "A"},
        {"field": "record.team", "op": "starts_with", "value": "eng"},
    ]}));
    let queries = candidates(&any, &t).unwrap();
    assert_eq!(
        queries,
        [
            KeyQuery { field: "status".into(), matches: KeyMatch::OneOf(vec!["A".into()]) },
            KeyQuery { field: "team".into(), matches: KeyMatch::StartsWith("eng".into()) },
        ]
    );
    assert_eq!(lookup_fields(&all), ["end_date", "name", "status", "start_date"]);
    assert_eq!(lookup_fields(&any), ["status", "team"]);
    let mixed = rules(json!([
        {"field": "f", "op": "contains", "value": "x"},
        {"not": {"field": "g", "op": "equals", "value": "x"}},
        {"any": [{"field": "h", "op": "equals", "value": "x"}, {"field": "i", "op": "contains", "value": "x"}]},
    ]));
    assert!(lookup_fields(&mixed).is_empty(), "nothing there is looked up");
}

#[test]
fn prefixes_and_ranges_compare_key_texts_in_byte_order() {
    let starts = KeyMatch::StartsWith("a\u{10FFFF}".into());
    assert!(starts.accepts("a\u{10FFFF}") && starts.accepts("a\u{10FFFF}\u{10FFFF}z"));
    assert!(!starts.accepts("b") && !starts.accepts("a"));
    let range = KeyMatch::Range { lower: Bound::Excluded("b".into()), upper: Bound::Included("d".into()) };
    assert!(!range.accepts("b") && range.accepts("b\0") && range.accepts("d") && !range.accepts("d\0"));
    assert!(KeyMatch::Equals(" Ann@ACME.test".into()).accepts("ann@acme.test"), "a value is normalised as a key");
}
