use super::*;
use serde_json::json;

fn scope() -> Value {
    json!({
        "brex_status": "ACTIVE",
        "brex_user_id": "",
        "blank": "   ",
        "name": "Ann O'Neil",
        "email": "ann@example.com",
        "age": 41,
        "age_text": "41",
        "score": 1.0,
        "active": true,
        "active_text": "TRUE",
        "nothing": null,
        "tags": ["admin", "eng", 7],
        "none": [],
        "obj": {},
        "profile": {"dept": "Eng"},
        "end_date": "2027-04-01",
        "start_ts": "2027-03-01T23:30:00Z",
        "start_ts_berlin": "2027-03-02T00:30:00+01:00",
        "naive": "2027-03-01T10:00:00",
        "today": "2027-03-01",
        "statuses": ["ACTIVE", "INVITED"],
        "phone": 4915112345_i64,
        "item": {"status": "DISABLED"}
    })
}

fn compile(value: Value) -> Condition {
    let mut diags = Diagnostics::new();
    match Condition::compile(&value, "rules", &mut diags) {
        Some(c) => {
            assert!(diags.is_empty());
            c
        }
        None => panic!("{value}: {:?}", diags.errors()),
    }
}

fn rule(field: &str, op: &str, value: Option<Value>) -> bool {
    let mut r = json!({"field": field, "op": op});
    if let Some(v) = value {
        r["value"] = v;
    }
    compile(r.clone()).evaluate(&scope()).unwrap_or_else(|e| panic!("{r}: {e}"))
}

fn errors(value: Value, path: &str) -> Vec<ConfigError> {
    let mut diags = Diagnostics::new();
    assert!(Condition::compile(&value, path, &mut diags).is_none(), "{value} compiled");
    diags.into_errors()
}

#[test]
fn equals_is_lenient_about_types_but_not_case() {
    assert!(rule("brex_status", "equals", Some(json!("ACTIVE"))));
    assert!(!rule("brex_status", "equals", Some(json!("active"))));
    assert!(rule("age", "equals", Some(json!(41))));
    assert!(rule("age", "equals", Some(json!(41.0))));
    assert!(rule("score", "equals", Some(json!(1))));
    assert!(rule("age", "equals", Some(json!("41"))));
    assert!(rule("age_text", "equals", Some(json!(41))));
    assert!(!rule("age_text", "equals", Some(json!("41.0"))), "two strings compare exactly");
    assert!(rule("active", "equals", Some(json!("true"))));
    assert!(rule("active_text", "equals", Some(json!(true))));
    assert!(!rule("active", "equals", Some(json!("yes"))));
    assert!(rule("tags", "equals", Some(json!(["admin", "eng", 7]))));
    assert!(!rule("tags", "equals", Some(json!(["admin", "eng"]))));
    assert!(rule("profile", "equals", Some(json!({"dept": "Eng"}))));
    assert!(rule("nothing", "equals", Some(json!(null))));
    // missing is null: equals is false, not_equals true
    assert!(!rule("missing", "equals", Some(json!("ACTIVE"))));
    assert!(rule("missing", "not_equals", Some(json!("ACTIVE"))));
    assert!(rule("brex_status", "not_equals", Some(json!("DISABLED"))));
    assert!(!rule("age", "not_equals", Some(json!("41"))));
}

#[test]
fn contains_starts_ends() {
    assert!(rule("email", "contains", Some(json!("@example"))));
    assert!(!rule("email", "contains", Some(json!("@EXAMPLE"))));
    assert!(rule("tags", "contains", Some(json!("eng"))));
    assert!(rule("tags", "contains", Some(json!("7"))), "element equality is lenient");
    assert!(!rule("tags", "contains", Some(json!("en"))), "arrays match whole elements");
    assert!(rule("phone", "contains", Some(json!("151"))));
    assert!(!rule("missing", "contains", Some(json!("x"))));
    assert!(!rule("profile", "contains", Some(json!("Eng"))));

    assert!(rule("email", "starts_with", Some(json!("ann@"))));
    assert!(!rule("email", "starts_with", Some(json!("bob"))));
    assert!(rule("email", "ends_with", Some(json!(".com"))));
    assert!(rule("phone", "starts_with", Some(json!(49))));
    assert!(!rule("active", "starts_with", Some(json!("t"))), "booleans aren't text");
    assert!(!rule("missing", "ends_with", Some(json!(""))));
}

#[test]
fn in_checks_membership() {
    assert!(rule("brex_status", "in", Some(json!(["ACTIVE", "INVITED"]))));
    assert!(!rule("brex_status", "in", Some(json!(["DISABLED"]))));
    assert!(rule("age", "in", Some(json!(["40", "41"]))));
    assert!(!rule("missing", "in", Some(json!(["ACTIVE"]))));
    // a single variable that holds a list
    assert!(rule("brex_status", "in", Some(json!("<<statuses>>"))));
    // template leaves inside the list
    assert!(rule("brex_status", "in", Some(json!(["x", "<<item.status>>", "<<brex_status>>"]))));
}

#[test]
fn emptiness() {
    for (field, empty) in [
        ("brex_user_id", true),
        ("blank", true),
        ("nothing", true),
        ("missing", true),
        ("none", true),
        ("obj", true),
        ("brex_status", false),
        ("age", false),
        ("active", false),
        ("tags", false),
        ("profile", false),
    ] {
        assert_eq!(rule(field, "is_empty", None), empty, "{field} is_empty");
        assert_eq!(rule(field, "is_not_empty", None), !empty, "{field} is_not_empty");
    }
}

#[test]
fn numeric_comparisons() {
    assert!(rule("age", "greater_than", Some(json!(40))));
    assert!(!rule("age", "greater_than", Some(json!(41))));
    assert!(rule("age_text", "greater_than", Some(json!("40.5"))));
    assert!(rule("age", "less_than", Some(json!(41.5))));
    assert!(!rule("name", "greater_than", Some(json!(1))), "non-numeric is false");
    assert!(!rule("name", "less_than", Some(json!(1))));
    assert!(!rule("missing", "less_than", Some(json!(1))));
    assert!(!rule("nothing", "greater_than", Some(json!(-1))));
}

#[test]
fn date_comparisons() {
    assert!(rule("end_date", "after", Some(json!("2027-03-01"))));
    assert!(!rule("end_date", "before", Some(json!("2027-03-01"))));
    assert!(rule("end_date", "on_or_after", Some(json!("2027-04-01"))));
    assert!(rule("end_date", "on_or_before", Some(json!("2027-04-01"))));
    assert!(!rule("end_date", "before", Some(json!("2027-04-01"))));
    assert!(rule("end_date", "after", Some(json!("<<today>>"))));
    // timestamp vs date: by UTC day
    assert!(rule("start_ts", "on_or_before", Some(json!("2027-03-01"))));
    assert!(rule("start_ts", "on_or_after", Some(json!("2027-03-01"))));
    assert!(!rule("start_ts", "after", Some(json!("2027-03-01"))));
    // +01:00 past midnight is still March 1st in UTC
    assert!(rule("start_ts_berlin", "on_or_before", Some(json!("<<today>>"))));
    // timestamp vs timestamp: exact
    assert!(rule("start_ts", "before", Some(json!("2027-03-01T23:30:01Z"))));
    assert!(!rule("start_ts", "before", Some(json!("2027-03-02T00:30:00+01:00"))), "same instant");
    assert!(rule("start_ts", "on_or_before", Some(json!("2027-03-02T00:30:00+01:00"))));
    assert!(rule("naive", "before", Some(json!("2027-03-01T10:00:01Z"))));
    // not dates: false either way
    assert!(!rule("name", "before", Some(json!("2030-01-01"))));
    assert!(!rule("name", "after", Some(json!("2000-01-01"))));
    assert!(!rule("missing", "before", Some(json!("2030-01-01"))));
    assert!(!rule("end_date", "before", Some(json!("<<name>>"))));
}

#[test]
fn matches_is_an_unanchored_regex() {
    assert!(rule("email", "matches", Some(json!("@example\\.com$"))));
    assert!(rule("email", "matches", Some(json!("example"))));
    assert!(!rule("email", "matches", Some(json!("^example"))));
    assert!(rule("age", "matches", Some(json!("^4\\d$"))));
    assert!(!rule("missing", "matches", Some(json!(".*"))));
    assert!(rule("name", "matches", Some(json!("(?i)^ann"))));
    // pattern built from a variable is compiled at evaluation
    assert!(rule("email", "matches", Some(json!("<<brex_status>>|^ann@"))));
    assert!(!rule("email", "matches", Some(json!("<<brex_status>>"))));
}

#[test]
fn groups_nest() {
    let c = compile(json!({"all": [
        {"field": "brex_status", "op": "equals", "value": "ACTIVE"},
        {"any": [
            {"field": "brex_user_id", "op": "is_not_empty"},
            {"not": {"field": "email", "op": "contains", "value": "example"}},
            {"all": [{"field": "age", "op": "greater_than", "value": 40}, {"field": "tags", "op": "contains", "value": "admin"}]}
        ]}
    ]}));
    assert!(c.evaluate(&scope()).unwrap());
    assert_eq!(
        c.to_string(),
        r#"brex_status equals "ACTIVE" and (brex_user_id is_not_empty or not email contains "example" or (age greater_than 40 and tags contains "admin"))"#
    );

    // a bare array means all
    let c = compile(json!([
        {"field": "brex_status", "op": "equals", "value": "ACTIVE"},
        {"field": "age", "op": "less_than", "value": 18}
    ]));
    assert!(!c.evaluate(&scope()).unwrap());
    assert!(compile(json!([])).evaluate(&scope()).unwrap(), "no rules: everyone");
    assert!(!compile(json!({"not": []})).evaluate(&scope()).unwrap());
    let c = compile(json!({"not": {"any": [{"field": "a", "op": "is_empty"}, {"field": "b", "op": "is_empty"}]}}));
    assert_eq!(c.to_string(), "not (a is_empty or b is_empty)");
    assert!(!c.evaluate(&scope()).unwrap());
}

#[test]
fn first_failure_explains() {
    let s = scope();
    let fail = |v: Value| compile(v).first_failure(&s).unwrap();
    assert_eq!(fail(json!({"field": "brex_status", "op": "equals", "value": "ACTIVE"})), None);
    assert_eq!(
        fail(json!({"field": "brex_user_id", "op": "is_not_empty"})).unwrap(),
        "brex_user_id is_not_empty (brex_user_id is empty)"
    );
    assert_eq!(
        fail(json!({"field": "end_date", "op": "before", "value": "<<today>>"})).unwrap(),
        r#"end_date before 2027-03-01 (end_date is "2027-04-01")"#
    );
    assert_eq!(
        fail(json!({"field": "name", "op": "before", "value": "2030-01-01"})).unwrap(),
        r#"name before 2030-01-01 (name is "Ann O'Neil", not a date)"#
    );
    assert_eq!(
        fail(json!({"field": "manager.id", "op": "equals", "value": 5})).unwrap(),
        "manager.id equals 5 (manager.id is missing)"
    );
    assert_eq!(
        fail(json!({"field": "name", "op": "greater_than", "value": 5})).unwrap(),
        r#"name greater_than 5 (name is "Ann O'Neil", not a number)"#
    );
    assert_eq!(
        fail(json!({"field": "email", "op": "is_empty"})).unwrap(),
        r#"email is_empty (email is "ann@example.com")"#
    );
    // all: the first failing rule
    assert_eq!(
        fail(json!([
            {"field": "brex_status", "op": "equals", "value": "ACTIVE"},
            {"field": "age", "op": "less_than", "value": 18},
            {"field": "brex_user_id", "op": "is_not_empty"}
        ]))
        .unwrap(),
        "age less_than 18 (age is 41)"
    );
    // any: every failure
    assert_eq!(
        fail(json!({"any": [
            {"field": "age", "op": "less_than", "value": 18},
            {"field": "brex_status", "op": "in", "value": ["DISABLED", "<<item.status>>"]}
        ]}))
        .unwrap(),
        r#"none of these held: age less_than 18 (age is 41); brex_status in ["DISABLED","DISABLED"] (brex_status is "ACTIVE")"#
    );
    assert_eq!(
        fail(json!({"not": {"field": "tags", "op": "contains", "value": "admin"}})).unwrap(),
        r#"not tags contains "admin" (tags contains "admin" is true)"#
    );
}

#[test]
fn missing_value_variable_is_an_error_naming_it() {
    let c = compile(json!({"field": "end_date", "op": "before", "value": "<<run.today>>"}));
    let e = c.evaluate(&scope()).unwrap_err();
    assert_eq!(e.variable(), Some("run.today"));
    assert!(e.to_string().contains("run.today"), "{e}");
    assert!(c.first_failure(&scope()).is_err());
    // but a missing field is just null
    let c = compile(json!({"field": "run.today", "op": "is_empty"}));
    assert!(c.evaluate(&scope()).unwrap());
}

#[test]
fn fields_may_be_written_as_templates() {
    let c = compile(json!({"field": "<<item.status>>", "op": "equals", "value": "DISABLED"}));
    assert!(c.evaluate(&scope()).unwrap());
    let c = compile(json!({"field": "item['status']", "op": "equals", "value": "DISABLED"}));
    assert!(c.evaluate(&scope()).unwrap());
    let c = compile(json!({"field": "brex_status", "op": "Not Equals", "value": "X"}));
    assert!(c.evaluate(&scope()).unwrap());
}

#[test]
fn variables_lists_fields_and_value_paths() {
    let c = compile(json!({"all": [
        {"field": "steps.get_user.status", "op": "equals", "value": "<<expected.status>>"},
        {"field": "end_date", "op": "before", "value": "<<today>>"},
        {"not": {"field": "end_date", "op": "is_empty"}}
    ]}));
    let vars: Vec<String> = c.variables().iter().map(|p| p.to_string()).collect();
    assert_eq!(vars, ["steps.get_user.status", "expected.status", "end_date", "today"]);
}

#[test]
fn compile_reports_every_problem_with_its_path() {
    let errs = errors(
        json!([
            {"field": "brex_status", "op": "equals", "value": "ACTIVE"},
            {"field": "brex_status", "op": "equls", "value": "ACTIVE"},
            {"field": "x", "op": "is_empty", "value": ""},
            {"field": "x", "op": "equals"},
            {"field": "x", "op": "in", "value": "ACTIVE"},
            {"field": "x", "op": "matches", "value": "(unclosed"},
            {"field": "x", "op": "equals", "value": "A", "vaule": "B"},
            {"field": "a..b", "op": "is_empty"},
            {"op": "is_empty"},
            {"field": "x", "op": "before", "value": "next tuesday"},
            {"field": "x", "op": "greater_than", "value": "ten"},
            {"field": "x", "op": "equals", "value": "{{#if y}}"},
            {"any": []},
            {"all": {"field": "x", "op": "is_empty"}},
            {"all": [], "field": "x"},
            "status == ACTIVE"
        ]),
        "begin.rules",
    );
    let got: Vec<(String, String, Option<String>)> = errs.into_iter().map(|e| (e.path, e.message, e.help)).collect();
    let find =
        |path: &str| got.iter().find(|(p, _, _)| p == path).unwrap_or_else(|| panic!("no error at {path}: {got:#?}"));

    let (_, msg, help) = find("begin.rules[1].op");
    assert_eq!(msg, r#"unknown op "equls""#);
    assert_eq!(help.as_deref(), Some("did you mean `equals`?"));
    assert_eq!(find("begin.rules[2].value").1, "`is_empty` takes no `value`");
    assert_eq!(find("begin.rules[3]").1, "`equals` needs a `value`");
    assert!(find("begin.rules[4].value").1.contains("`in` needs a list"));
    assert!(find("begin.rules[5].value").1.contains("invalid regular expression"));
    let (_, msg, help) = find("begin.rules[6].vaule");
    assert_eq!(msg, "unknown key `vaule` in a rule");
    assert_eq!(help.as_deref(), Some("did you mean `value`?"));
    assert!(find("begin.rules[7].field").1.contains("expected a name after `.`"));
    assert_eq!(find("begin.rules[8]").1, "a rule needs a `field`");
    assert!(find("begin.rules[9].value").1.contains("needs a date"));
    assert!(find("begin.rules[10].value").1.contains("needs a number"));
    assert!(find("begin.rules[11].value").1.contains("never closed"));
    assert_eq!(find("begin.rules[12].any").1, "`any` needs at least one rule");
    assert!(find("begin.rules[13].all").1.contains("needs a list of rules"));
    assert!(find("begin.rules[14].field").1.contains("can't sit next to `all`"));
    assert!(find("begin.rules[15]").1.contains("expected a rule"));
    assert!(!got.iter().any(|(p, _, _)| p.starts_with("begin.rules[0]")));
    assert_eq!(got.len(), 15, "{got:#?}");
}

#[test]
fn op_names() {
    assert_eq!(Op::ALL.len(), Op::names().count());
    for op in Op::ALL {
        assert_eq!(Op::from_name(op.name()), Some(op));
    }
    assert_eq!(Op::from_name("is-not-empty"), Some(Op::IsNotEmpty));
    assert_eq!(Op::from_name("equls"), None);
}

/// What the field index's date lookups rely on (engine/src/select.rs): each text the date
/// ops read starts with its written date, and its UTC day is within two days of it.
#[test]
fn a_date_text_starts_with_its_written_date_and_its_utc_day_is_near_it() {
    let cases = [
        ("2027-03-01", "2027-03-01"),
        (" 2027-03-01 ", "2027-03-01"),
        ("20270301", "2027-03-01"),
        ("2027-03-01T10:00:00Z", "2027-03-01"),
        ("20270301T100000Z", "2027-03-01"),
        ("2027-03-01t23:30:00-05:00", "2027-03-02"),
        ("2027-03-01T00:00:00+25:59", "2027-02-27"),
        ("2027-03-01T23:59:59-25:59", "2027-03-03"),
        ("2027-03-01 10:00", "2027-03-01"),
        ("2027-03-01T10:00:00[America/New_York]", "2027-03-01"),
        ("+002027-03-01", "2027-03-01"),
        ("-000044-03-15", "-000044-03-15"),
    ];
    for (text, day) in cases {
        assert_eq!(day_of(&json!(text)).map(|d| d.to_string()).as_deref(), Some(day), "{text}");
    }
    for text in
        ["03/01/2027", "1 March 2027", "2027-3-1", "2027-060", "2027-W09-1", "@1700000000", "\u{2212}002027-03-01"]
    {
        assert_eq!(day_of(&json!(text)), None, "{text} is not read as a date");
    }
    assert_eq!(day_of(&json!(20270301)), None, "numbers are not dates");
}

#[test]
fn equal_values_lists_what_can_equal_a_text() {
    assert_eq!(equal_values(&json!("ACTIVE")), Some(vec![json!("ACTIVE")]));
    assert_eq!(equal_values(&json!("True")), Some(vec![json!("True"), json!(true)]));
    assert_eq!(equal_values(&json!(" 5 ")), None, "a number has endless spellings");
    assert_eq!(equal_values(&json!(5)), None);
    assert_eq!(equal_values(&json!(true)), None, "`TRUE`, ` true ` ... all equal it");
}
