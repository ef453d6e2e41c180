//! `roster records import` reads what the file says, all of it, or refuses and says why.

mod support;

use serde_json::json;
use support::TestHome;

#[test]
fn a_bom_json_file_imports_its_rows() {
    let home = TestHome::new();
    let path = home.path().join("people.json");
    std::fs::write(&path, b"\xEF\xBB\xBF[{\"email\": \"ann@acme.test\"}, {\"email\": \"bob@acme.test\"}]").unwrap();
    let out = home.roster(&["records", "import", path.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("2 read, 2 created"), "{}", out.stdout);
}

#[test]
fn a_broken_csv_is_refused_whole_and_writes_nothing() {
    let home = TestHome::new();
    for (name, text, wanted) in [
        ("quote.csv", "email,name\nann@acme.test,\"Ann\nbob@acme.test,Bob\n", "never closed"),
        ("dup.csv", "email,name,name\nann@acme.test,Ann,Annie\n", "`name` twice"),
    ] {
        let file = home.file(name, text);
        let out = home.roster(&["records", "import", file.to_str().unwrap()]);
        assert_ne!(out.code, 0, "{name} was accepted: {}", out.all());
        assert!(out.stderr.contains(wanted), "{name}: {}", out.stderr);
    }
    let bad = home.path().join("latin1.csv");
    std::fs::write(&bad, b"email,name\nann@acme.test,Ren\xE9e\n").unwrap();
    let out = home.roster(&["records", "import", bad.to_str().unwrap()]);
    assert!(out.stderr.contains("latin1.csv:2: not valid UTF-8"), "{}", out.stderr);
    assert_eq!(home.records().len(), 0, "a refused file wrote records");
}

#[test]
fn huge_integer_ids_are_sent_with_every_digit() {
    let home = TestHome::new();
    let file = home.file("people.json", r#"[{"email": "ann@acme.test", "badge": 123456789012345678901234567890}]"#);
    home.roster(&["records", "import", file.to_str().unwrap()]).ok();
    assert_eq!(home.fields("ann@acme.test")["badge"], json!("123456789012345678901234567890"));
    let wf = home.file(
        "badge.json",
        r#"{"name": "badge", "begin": {"trigger": {"manual": true}, "next": "get"},
            "blocks": {"get": {"type": "api", "request": {"method": "GET", "url": "https://badges.test/v1/<<badge>>"}}}}"#,
    );
    let out = home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--dry-run"]).ok();
    assert!(out.stdout.contains("https://badges.test/v1/123456789012345678901234567890"), "{}", out.stdout);
}
