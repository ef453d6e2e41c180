//! `roster presets list|show`.

use clap::Subcommand;
use roster_blocks::kinds::CompileContext;
use roster_blocks::kinds::api::ApiBlock;
use serde_json::{Value, json};

use super::{Context, Outcome, output};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every preset, built-in and from the presets folder.
    List {
        /// Print the presets as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A preset's request, parameters and a sample rendered request.
    Show {
        /// The preset's name, e.g. brex.lock_card (see `roster presets list`).
        name: String,
        /// Print the preset and its sample request as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: Command, cx: &Context) -> anyhow::Result<Outcome> {
    let catalog = cx.presets()?;
    match command {
        Command::List { json } => {
            if json {
                let out: Vec<_> = catalog
                    .iter()
                    .map(|p| json!({"name": p.name, "title": p.title, "method": p.method, "url": p.url, "origin": p.origin}))
                    .collect();
                return output::json(&out).map(|_| Outcome::Ok);
            }
            let rows: Vec<Vec<String>> = catalog
                .iter()
                .map(|p| vec![p.name.clone(), format!("{} {}", p.method, p.url), p.title.clone()])
                .collect();
            output::table(&["PRESET", "REQUEST", "WHAT IT DOES"], &rows);
            Ok(Outcome::Ok)
        }
        Command::Show { name, json } => {
            let Some(p) = catalog.get(&name) else {
                anyhow::bail!("no preset `{name}`; {}", roster_blocks::diag::suggest(&name, catalog.names()));
            };
            let sample = sample_request(&catalog, &name, &p.sample_record, &p.sample_with);
            if json {
                let params: Vec<_> = p
                    .parameters
                    .iter()
                    .map(|q| json!({"name": q.name, "required": q.required, "from_record": q.from_record, "default": q.default, "enum": q.allowed, "description": q.description}))
                    .collect();
                return output::json(&json!({
                    "name": p.name, "title": p.title, "description": p.description, "method": p.method, "url": p.url,
                    "headers": p.headers, "body": p.body, "parameters": params, "accept": p.accept,
                    "response": p.response, "retry_safe": p.retry_safe,
                    "idempotency": p.idempotency.as_ref().map(|i| json!({"header": i.header, "required": i.required})),
                    "paginated": p.paginate.is_some(), "origin": p.origin,
                    "sample": {"record": p.sample_record, "with": p.sample_with, "request": sample.as_ref().ok()},
                }))
                .map(|_| Outcome::Ok);
            }
            println!("{} — {}", p.name, p.title);
            if !p.description.is_empty() {
                println!("{}", p.description);
            }
            println!("\nrequest:  {} {}", p.method, p.url);
            if let Some(b) = &p.body {
                println!("body:     {}", serde_json::to_string(b)?);
            }
            if let Some(i) = &p.idempotency {
                println!(
                    "idempotency: {} header{}",
                    i.header,
                    if i.required { " (required by the vendor)" } else { "" }
                );
            }
            if p.paginate.is_some() {
                println!("paging:   follows every page; the step's response is {{\"items\": [every item]}}");
            }
            println!("success:  {}", p.accept.iter().map(u16::to_string).collect::<Vec<_>>().join(", "));
            println!(
                "retry:    {}",
                if p.retry_safe { "safe to resend" } else { "resent only with its idempotency key" }
            );
            println!("\nparameters:");
            let rows: Vec<Vec<String>> = p
                .parameters
                .iter()
                .map(|q| {
                    let source = if q.from_record { "with, else record field" } else { "with" };
                    let mut notes = Vec::new();
                    if let Some(d) = &q.default {
                        notes.push(format!("default {d}"));
                    }
                    if let Some(a) = &q.allowed {
                        notes.push(format!(
                            "one of {}",
                            a.iter()
                                .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    vec![
                        q.name.clone(),
                        if q.required { "required".into() } else { "optional".into() },
                        source.into(),
                        notes.join("; "),
                    ]
                })
                .collect();
            output::table(&["NAME", "", "FROM", "NOTES"], &rows);
            if !p.response.is_empty() {
                println!("\nmaps back to the record:");
                for (k, v) in &p.response {
                    println!("  {k} ← {}", v.as_str().map(str::to_string).unwrap_or(v.to_string()));
                }
            }
            match sample {
                Ok(req) => {
                    println!("\nsample, for the record {}:", Value::Object(p.sample_record.clone()));
                    println!("  {}", req.line());
                    for (k, v) in &req.headers {
                        println!("  {k}: {v}");
                    }
                    if let Some(b) = &req.body {
                        println!("  {}", serde_json::to_string_pretty(b)?.replace('\n', "\n  "));
                    }
                }
                Err(e) => println!("\nsample: {e}"),
            }
            Ok(Outcome::Ok)
        }
    }
}

/// Renders the preset for its sample record, as an API block with no `with` would.
fn sample_request(
    catalog: &roster_blocks::preset::PresetCatalog,
    name: &str,
    record: &serde_json::Map<String, Value>,
    with: &serde_json::Map<String, Value>,
) -> anyhow::Result<roster_blocks::kinds::api::RenderedRequest> {
    let mut diags = roster_blocks::Diagnostics::new();
    let cx = CompileContext { presets: catalog, credentials: None };
    let block_json = json!({"type": "api", "preset": name, "credential": "sample", "with": with});
    let Some(api) = ApiBlock::compile(&block_json, "sample", &cx, &mut diags) else {
        let errors: Vec<String> = diags.errors().iter().map(|e| e.to_string()).collect();
        anyhow::bail!("{}", errors.join("; "));
    };
    let mut scope = record.clone();
    scope.insert("run".into(), json!({"id": "00000000-0000-7000-8000-000000000000"}));
    Ok(api.render(&Value::Object(scope), "sample-idempotency-key")?)
}
