use super::*;
use serde_json::json;

fn scope() -> Value {
    json!({
        "user": {
            "email": "ann@example.com",
            "first name": "Ann",
            "first-name": "Ann",
            "id": "../admin",
            "age": 41,
            "active": true,
            "manager_id": null,
            "tags": ["a", "b"],
            "address": {"city": "Köln", "zip": "50667"}
        },
        "response": {"items": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], "weird]key": 3},
        "nasty": "quote \" newline \n braces {} {{y}} <<user.email>> ü ../ \\ end",
        "empty": ""
    })
}

fn render(src: &str) -> Result<String, RenderError> {
    Template::compile(src).unwrap().render_string(&scope(), Escape::None)
}

fn ok(src: &str) -> String {
    render(src).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn compile_err(src: &str) -> TemplateError {
    match Template::compile(src) {
        Ok(t) => panic!("{src:?} compiled: {t:?}"),
        Err(e) => e,
    }
}

#[test]
fn is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + fmt::Debug>() {}
    check::<Template>();
    check::<JsonTemplate>();
}

#[test]
fn angle_and_mustache_variables_render_the_same() {
    for src in ["<<user.email>>", "{{user.email}}", "<< user.email >>", "{{ user.email }}", "{{{user.email}}}"] {
        assert_eq!(ok(src), "ann@example.com", "{src}");
    }
    assert_eq!(ok("Hi <<user.first-name>>, {{user.age}} years"), "Hi Ann, 41 years");
}

#[test]
fn js_style_brackets_work_in_both_syntaxes() {
    assert_eq!(ok("<<user['first name']>>"), "Ann");
    assert_eq!(ok("{{user[\"first name\"]}}"), "Ann");
    assert_eq!(ok("<<response['items'][1].name>>"), "two");
    assert_eq!(ok("{{response.items[0].id}}"), "1");
    assert_eq!(ok("<<user.tags.1>>"), "b");
    // inside handlebars blocks too
    assert_eq!(ok("{{#each response['items']}}{{id}}:{{name}};{{/each}}"), "1:one;2:two;");
    assert_eq!(ok("{{#if user['first name']}}yes{{/if}}"), "yes");
    assert_eq!(ok("{{#with user['address']}}<<city>>{{/with}}"), "Köln");
}

#[test]
fn non_variables_are_left_alone() {
    for src in [
        "a << b",
        "1 << 2 >> 3 is shifty",
        "1<<2",
        "x <<>> y",
        "<< a",
        "<<",
        "<<😀",
        "\\<<EOF\nline\nEOF",
        "{x}",
        "}}",
        "a < b > c",
    ] {
        let t = Template::compile(src).unwrap();
        assert!(t.is_literal(), "{src}");
        assert_eq!(t.render_string(&scope(), Escape::None).unwrap(), src.replace("\\<<", "<<"));
    }
    assert_eq!(ok("<<<user.age>>>"), "<41>");
}

#[test]
fn an_unclosed_angle_variable_is_an_error_not_literal_text() {
    for (src, wanted) in [
        ("Hi <<first_name, welcome", "`<<first_name` is never closed"),
        ("<<user.email>", "`<<user.email` is never closed"),
        ("<<EOF\nline\nEOF", "`<<EOF` is never closed"),
        ("<<a b>>", "`<<a` is never closed"),
        ("<<a.>>", "`<<` starts a variable, but expected a name after `.`"),
        ("x <<prénom", "`<<prénom` is never closed"),
    ] {
        let e = compile_err(src);
        assert!(e.message.contains(wanted), "{src:?}: {e}");
        assert_eq!(e.help.as_deref(), Some("add `>>`, or write `\\<<` for a literal `<<`"), "{src:?}");
    }
}

#[test]
fn backslash_escapes_make_literal_delimiters() {
    let t = Template::compile(r"\<<user.email>> and \{{user.email}}").unwrap();
    assert!(t.is_literal());
    assert_eq!(t.render_string(&scope(), Escape::None).unwrap(), "<<user.email>> and {{user.email}}");
    // same inside a template that needs handlebars
    assert_eq!(ok(r"{{#if user}}\<<x>> \{{y}} C:\temp\\{{/if}}"), r"<<x>> {{y}} C:\temp\");
    assert_eq!(ok(r"C:\\<<user.age>> C:\\{{user.age}}"), r"C:\41 C:\41");
    assert_eq!(ok(r"{{#if user}}a\\{{user.age}}{{/if}}"), r"a\41");
    assert_eq!(ok(r"path\<<user.age>>"), "path<<user.age>>");
}

#[test]
fn if_else_and_each() {
    assert_eq!(ok("{{#if user.active}}on{{else}}off{{/if}}"), "on");
    assert_eq!(ok("{{#if user.nope}}on{{else}}off{{/if}}"), "off");
    assert_eq!(ok("{{#if user.manager_id}}m{{else}}none{{/if}}"), "none");
    assert_eq!(ok("{{#unless empty}}blank{{else}}set{{/unless}}"), "blank");
    assert_eq!(ok("{{#each user.tags}}{{@index}}={{this}}{{#unless @last}},{{/unless}}{{/each}}"), "0=a,1=b");
    assert_eq!(ok("{{#each response.items as |item|}}<<item.name>> {{/each}}"), "one two ");
    assert_eq!(ok("{{#each user.tags}}{{../user.email}}|{{/each}}"), "ann@example.com|ann@example.com|");
    assert_eq!(ok("{{#if (eq user.age 41)}}41!{{/if}}"), "41!");
    assert_eq!(ok("a {{~ user.age ~}} b"), "a41b");
    assert_eq!(ok("{{#if user.nope}}1{{else if user.active}}2{{else}}3{{/if}}"), "2");
    assert_eq!(ok("{{#each user.address}}{{@key}}={{this}};{{/each}}"), "city=Köln;zip=50667;");
    assert_eq!(ok("{{#each user.tags}}{{@root.user.age}}{{/each}}"), "4141");
    assert_eq!(ok("x{{! a comment }}y{{!-- another }} --}}z"), "xyz");
}

#[test]
fn missing_variables_are_errors_naming_the_variable() {
    let missing = |src: &str| match render(src) {
        Err(RenderError::Missing { variable, .. }) => variable,
        other => panic!("{src:?}: {other:?}"),
    };
    assert_eq!(missing("Hello <<user.nope>>"), "user.nope");
    assert_eq!(missing("<<user.nope>>"), "user.nope");
    assert_eq!(missing("{{user['no such']}}"), "user['no such']");
    assert_eq!(missing("{{#if user}}<<user.nope>>{{/if}}"), "user.nope");
    assert_eq!(missing("{{#each nope}}x{{/each}}"), "nope");
    assert_eq!(missing("{{#each response.items}}{{nope}}{{/each}}"), "nope");
    assert_eq!(missing("{{json nope}}"), "nope");
    let e = render("<<user.nope>>").unwrap_err();
    assert_eq!(e.to_string(), "variable `user.nope` does not exist");
    // render_value is strict too
    let e = Template::compile("<<nope>>").unwrap().render_value(&scope()).unwrap_err();
    assert_eq!(e, RenderError::Missing { variable: "nope".into(), hint: None });
}

#[test]
fn null_in_text_is_an_error_but_default_and_if_handle_it() {
    match render("/v2/users/<<user.manager_id>>") {
        Err(RenderError::Null { variable }) => assert_eq!(variable, "user.manager_id"),
        other => panic!("{other:?}"),
    }
    match render("{{#if user}}{{user.manager_id}}{{/if}}") {
        Err(RenderError::Null { variable }) => assert_eq!(variable, "user.manager_id"),
        other => panic!("{other:?}"),
    }
    assert!(render("<<user.manager_id>>").unwrap_err().to_string().contains("default"));
    assert_eq!(ok("m={{default user.manager_id \"none\"}}"), "m=none");
    assert_eq!(ok("m={{default user.manager_id \"\"}}"), "m=");
    assert_eq!(ok("m={{default user.missing 'x'}}"), "m=x");
    assert_eq!(ok("m={{default user.email \"x\"}}"), "m=ann@example.com");
    assert_eq!(ok("m={{default user['first name'] \"x\"}}"), "m=Ann");
    // single variable keeps null as a value
    let t = Template::compile("<<user.manager_id>>").unwrap();
    assert_eq!(t.render_value(&scope()).unwrap(), Value::Null);
}

#[test]
fn values_render_by_type() {
    assert_eq!(ok("n=<<user.age>> b=<<user.active>>"), "n=41 b=true");
    assert_eq!(ok("tags=<<user.tags>>"), r#"tags=["a","b"]"#);
    assert_eq!(ok("addr=<<user.address>>"), r#"addr={"city":"Köln","zip":"50667"}"#);
    assert_eq!(ok("{{#if user}}<<user.tags>>{{/if}}"), r#"["a","b"]"#);
    assert_eq!(ok("{{json user.email}}"), r#""ann@example.com""#);
    assert_eq!(ok("<b>{{nasty}}</b>"), format!("<b>{}</b>", scope()["nasty"].as_str().unwrap()));
}

#[test]
fn single_variable_keeps_its_type() {
    let s = scope();
    let value = |src: &str| Template::compile(src).unwrap().render_value(&s).unwrap();
    assert_eq!(value("<<user.age>>"), json!(41));
    assert_eq!(value("{{user.active}}"), json!(true));
    assert_eq!(value("<<user.tags>>"), json!(["a", "b"]));
    assert_eq!(value("<<user.address>>"), json!({"city": "Köln", "zip": "50667"}));
    assert_eq!(value("<< user.age >>"), json!(41));
    // anything around the variable makes it a string
    assert_eq!(value(" <<user.age>>"), json!(" 41"));
    assert_eq!(value("<<user.age>> "), json!("41 "));
    assert_eq!(value("{{#if user}}{{user.age}}{{/if}}"), json!("41"));
    assert_eq!(value("plain"), json!("plain"));

    let t = Template::compile("<<user.age>>").unwrap();
    assert_eq!(t.single_variable().unwrap().to_string(), "user.age");
    assert!(Template::compile(" <<user.age>>").unwrap().single_variable().is_none());
    assert!(Template::compile("a<<b>>").unwrap().single_variable().is_none());
    assert!(!t.is_literal());
    assert_eq!(t.source(), "<<user.age>>");
}

#[test]
fn values_are_never_re_rendered() {
    let s = json!({"v": "<<x>> {{y}} {{#if z}}", "x": "X", "y": "Y"});
    for src in ["<<v>>", "[<<v>>]", "{{#if v}}<<v>>{{/if}}"] {
        let out = Template::compile(src).unwrap().render_string(&s, Escape::None).unwrap();
        assert!(out.contains("<<x>> {{y}} {{#if z}}"), "{src}: {out}");
    }
}

#[test]
fn url_component_encodes_values_not_literal_text() {
    let s = scope();
    let url = |src: &str| Template::compile(src).unwrap().render_string(&s, Escape::UrlComponent).unwrap();
    assert_eq!(url("/v2/users/<<user.id>>/cards"), "/v2/users/..%2Fadmin/cards");
    assert_eq!(url("/u?city=<<user.address.city>>&e=<<user.email>>"), "/u?city=K%C3%B6ln&e=ann%40example.com");
    assert_eq!(url("<<user.id>>"), "..%2Fadmin");
    assert_eq!(url("/{{#if user}}<<user.id>>{{/if}}/x"), "/..%2Fadmin/x");
    assert_eq!(url("/{{default user.manager_id \"a b\"}}"), "/a%20b");
    assert_eq!(url("/a b/<<user.tags>>"), "/a b/%5B%22a%22%2C%22b%22%5D");
    let s2 = json!({"v": "A-z_0.9~ !*'()"});
    let t = Template::compile("<<v>>").unwrap();
    assert_eq!(t.render_string(&s2, Escape::UrlComponent).unwrap(), "A-z_0.9~%20%21%2A%27%28%29");
}

#[test]
fn variables_lists_root_paths() {
    let vars = |src: &str| -> Vec<String> {
        Template::compile(src).unwrap().variables().iter().map(|p| p.to_string()).collect()
    };
    assert_eq!(vars("plain"), Vec::<String>::new());
    assert_eq!(vars("<<a.b>> {{c[0]}} <<a.b>>"), ["a.b", "c[0]"]);
    assert_eq!(vars("{{#if x}}<<y>>{{else}}{{default z \"\"}}{{/if}}"), ["x", "y", "z"]);
    // inside #each, paths are relative to the item
    assert_eq!(vars("{{#each steps.list['items']}}<<id>>{{/each}}<<after>>"), ["steps.list.items", "after"]);
    assert_eq!(vars("{{#if (eq status 'A')}}1{{/if}}"), ["status"]);
}

#[test]
fn compile_errors_say_what_and_where() {
    let e = compile_err("Hello {{#if user.active}}yes");
    assert!(e.message.contains("`{{#if}}` is never closed"), "{e}");
    assert_eq!((e.line, e.column), (1, 7));
    assert!(e.to_string().contains("add `{{/if}}`"), "{e}");

    let e = compile_err("{{#if a}}\n  {{#each b}}x{{/if}}");
    assert!(e.message.contains("`{{/if}}` closes `{{#each}}`"), "{e}");
    assert_eq!((e.line, e.column), (2, 15));

    let e = compile_err("x {{/if}}");
    assert!(e.message.contains("never opened"), "{e}");

    let e = compile_err("line one\nhi {{user.email");
    assert!(e.message.contains("never closed"), "{e}");
    assert_eq!((e.line, e.column), (2, 4));

    let e = compile_err("{{defualt x \"\"}}");
    assert!(e.message.contains("unknown helper `defualt`"), "{e}");
    assert_eq!(e.help.as_deref(), Some("did you mean `default`?"));

    let e = compile_err("ok\n{{#if (eq x 1}}y{{/if}}");
    assert!(e.message.contains("invalid handlebars syntax"), "{e}");
    assert_eq!(e.line, 2, "{e}");

    let e = compile_err("{{> partial}}");
    assert!(e.message.contains("partials"), "{e}");
    let e = compile_err("{{else}}");
    assert!(e.message.contains("outside a block"), "{e}");
    let e = compile_err("{{#if x}}{{response['weird]key']}}{{/if}}");
    assert!(e.message.contains("contains `]`"), "{e}");
    // outside a block the same key is fine
    assert_eq!(ok("<<response['weird]key']>>"), "3");
}

#[test]
fn json_template_renders_leaves_alone() {
    let body = json!({
        "owner": {"user_id": "<<user.id>>", "age": "<<user.age>>", "label": "Age: <<user.age>>"},
        "tags": "<<user.tags>>",
        "text": "<<nasty>>",
        "wrapped": "[<<nasty>>]",
        "literal": "no vars",
        "list": ["<<user.active>>", 3, null, {"k": "{{user.email}}"}],
        "count": 2,
        "<<not a template key>>": true
    });
    let mut diags = Diagnostics::new();
    let t = JsonTemplate::compile(&body, "body", &mut diags).unwrap();
    assert!(diags.is_empty());
    let out = t.render(&scope()).unwrap();
    let nasty = scope()["nasty"].clone();
    assert_eq!(
        out,
        json!({
            "owner": {"user_id": "../admin", "age": 41, "label": "Age: 41"},
            "tags": ["a", "b"],
            "text": nasty,
            "wrapped": format!("[{}]", nasty.as_str().unwrap()),
            "literal": "no vars",
            "list": [true, 3, null, {"k": "ann@example.com"}],
            "count": 2,
            "<<not a template key>>": true
        })
    );
    // the rendered body is valid JSON text that round-trips
    let text = serde_json::to_string(&out).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), out);
    let vars: Vec<String> = t.variables().iter().map(|p| p.to_string()).collect();
    assert_eq!(vars, ["user.id", "user.age", "user.tags", "nasty", "user.active", "user.email"]);
}

#[test]
fn json_template_literal_and_errors() {
    let mut diags = Diagnostics::new();
    let t = JsonTemplate::compile(&json!({"a": [1, "x"]}), "b", &mut diags).unwrap();
    assert_eq!(t.as_literal(), Some(&json!({"a": [1, "x"]})));

    let body = json!({
        "owner": {"user_id": "{{#if x}}"},
        "list": ["ok", "{{nope x}}"],
        "odd key": "{{x"
    });
    let mut diags = Diagnostics::new();
    assert!(JsonTemplate::compile(&body, "blocks.x.request.body", &mut diags).is_none());
    let paths: Vec<&str> = diags.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["blocks.x.request.body.owner.user_id", "blocks.x.request.body.list[1]", "blocks.x.request.body['odd key']"]
    );
    assert!(diags.errors()[0].message.starts_with("invalid template: `{{#if}}` is never closed"));
    assert_eq!(diags.errors()[0].help.as_deref(), Some("add `{{/if}}`"));

    let mut diags = Diagnostics::new();
    let t = JsonTemplate::compile(&json!({"id": "<<missing>>"}), "", &mut diags).unwrap();
    assert_eq!(t.render(&scope()).unwrap_err(), RenderError::Missing { variable: "missing".into(), hint: None });
}

#[test]
fn render_is_fast_enough() {
    // Not a benchmark; catches an accidental re-parse per render.
    let t = Template::compile("/v2/users/<<user.id>>/cards?x=<<user.age>>").unwrap();
    let h = Template::compile("{{#if user.active}}<<user.email>>{{else}}none{{/if}}").unwrap();
    let s = scope();
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        t.render_string(&s, Escape::UrlComponent).unwrap();
        h.render_string(&s, Escape::None).unwrap();
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn any_unicode_field_name_works_in_both_syntaxes() {
    let scope = json!({
        "prénom": "Zoé", "名前": "花子", "Straße": "Hauptstraße 1", "😀": "smile",
        "e\u{301}t\u{e9}": "combining", "user": {"prénom": "Ann"}
    });
    for (src, want) in [
        ("{{prénom}}", "Zoé"),
        ("<<prénom>>", "Zoé"),
        ("<<名前>>", "花子"),
        ("{{名前}}", "花子"),
        ("{{Straße}}", "Hauptstraße 1"),
        ("<< Straße >>", "Hauptstraße 1"),
        ("{{😀}}", "smile"),
        ("<<😀>>", "smile"),
        ("<<e\u{301}t\u{e9}>>", "combining"),
        ("{{e\u{301}t\u{e9}}}", "combining"),
        ("<<user.prénom>>", "Ann"),
        ("{{user['prénom']}}", "Ann"),
        ("{{#if prénom}}ja {{prénom}}{{/if}}", "ja Zoé"),
        ("{{#if (eq 名前 \"花子\")}}はい{{else}}いいえ{{/if}}", "はい"),
        ("{{#with user}}{{prénom}}{{/with}}", "Ann"),
        ("é {{prénom}} ü <<名前>> ß", "é Zoé ü 花子 ß"),
    ] {
        let t = Template::compile(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert_eq!(t.render_string(&scope, Escape::None).unwrap(), want, "{src}");
    }
    // Errors after non-ASCII text point at the right character.
    let e = compile_err("ü {{#if prénom}}");
    assert_eq!((e.line, e.column), (1, 3), "{e}");
    let e = compile_err("名前 {{é");
    assert!(e.message.contains("never closed"), "{e}");
    assert_eq!((e.line, e.column), (1, 4), "{e}");
}

/// Random mixes of template syntax and multi-byte characters: compiling and rendering
/// must give a result or an error, never a panic.
#[test]
fn random_templates_never_panic() {
    const PIECES: &[&str] = &[
        "{{", "}}", "{{{", "}}}", "<<", ">>", "\\", "\\<<", "\\{{", "#if ", "#each ", "#with ", "/if", "/each", "else",
        "(", ")", "[", "]", "'", "\"", ".", " ", "~", "!", "!--", "--", "|", "=", "@index", "../", "eq ", "x", "user",
        "é", "名前", "😀", "\u{301}", "ß", "\u{a0}", "\n", "0", "-1", "as |i|", "&", ">", "*", "^",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let scope = scope();
    for _ in 0..20_000 {
        let len = (next() % 12) as usize;
        let src: String = (0..len).map(|_| PIECES[(next() as usize) % PIECES.len()]).collect();
        let result = std::panic::catch_unwind(|| {
            if let Ok(t) = Template::compile(&src) {
                let _ = t.render_string(&scope, Escape::None);
                let _ = t.render_string(&scope, Escape::UrlComponent);
                let _ = t.render_value(&scope);
            }
        });
        assert!(result.is_ok(), "panicked on {src:?}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // A tokio worker's 2 MiB stack, where a reload compiles templates.
    let outcome = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let deep = 4_000;
            let blocks = format!("{}x{}", "{{#if user}}".repeat(deep), "{{/if}}".repeat(deep));
            let e = compile_err(&blocks);
            assert!(e.message.contains("blocks nest more than 32 deep"), "{e}");
            let subs = format!("{{{{#if {}user.age{}}}}}y{{{{/if}}}}", "(not ".repeat(deep), ")".repeat(deep));
            let e = compile_err(&subs);
            assert!(e.message.contains("sub-expressions nest more than 32 deep"), "{e}");
            let print = format!("{{{{default {}user.age{} 1}}}}", "(default ".repeat(deep), " 1)".repeat(deep));
            assert!(compile_err(&print).message.contains("nest more than"));

            // The limit itself still works.
            let ok32 = format!("{}x{}", "{{#if user}}".repeat(32), "{{/if}}".repeat(32));
            assert_eq!(Template::compile(&ok32).unwrap().render_string(&scope(), Escape::None).unwrap(), "x");
            let ok32 = format!("{{{{#if {}user.age{}}}}}y{{{{/if}}}}", "(not ".repeat(32), ")".repeat(32));
            assert_eq!(Template::compile(&ok32).unwrap().render_string(&scope(), Escape::None).unwrap(), "y");
        })
        .unwrap()
        .join();
    assert!(outcome.is_ok());
}

#[test]
fn a_missing_variable_suggests_the_name_the_scope_holds() {
    let scope = json!({"now": "2027-03-01T09:00:00Z", "today": "2027-03-01", "run": {"id": "r1"},
        "steps": {"invite": {"response": {"id": "u1"}}}, "first_name": "Ann"});
    for (src, hint) in [
        ("<<nw>>", "did you mean `now`?"),
        ("{{tody}}", "did you mean `today`?"),
        ("Hi <<frist_name>>", "did you mean `first_name`?"),
        ("<<steps.invte.response.id>>", "did you mean `invite`?"),
        ("{{#if x}}{{/if}}{{run.idd}}", "did you mean `id`?"),
    ] {
        let e = Template::compile(src).unwrap().render_string(&scope, Escape::None).unwrap_err();
        assert!(e.to_string().ends_with(&format!("does not exist ({hint})")), "{src}: {e}");
    }
}
