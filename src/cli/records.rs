//! `roster records import|list|show`.

use std::path::PathBuf;

use clap::Subcommand;
use roster_api::wire::{ImportRequest, RecordQuery, RecordRow};
use roster_engine::model::Record;
use roster_engine::records;

use super::remote::{self, Remote};
use super::{Context, Outcome, output};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import people from a JSON array, NDJSON or CSV file; re-importing updates by key.
    Import {
        /// A JSON array, NDJSON or CSV file (with a header row) of people.
        file: PathBuf,
        /// The field that identifies a person.
        #[arg(long, default_value = "email")]
        key: String,
        /// Print the import report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List people.
    List {
        /// Show these fields (comma-separated).
        #[arg(long, default_value = "email,first_name,last_name")]
        fields: String,
        /// Print every record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one person with every field and where it came from.
    Show {
        /// The person's key value (an email by default) or record id.
        #[arg(value_name = "KEY")]
        value: String,
        /// The field the value is matched against (the same `--key` as `records import`).
        #[arg(long, alias = "key-field", default_value = "email")]
        key: String,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: Command, cx: &Context) -> anyhow::Result<Outcome> {
    let store = match cx.home.open_store().await {
        Ok(s) => s,
        Err(e) if remote::is_locked(&e) => return run_remote(command, cx).await,
        Err(e) => return Err(e.into()),
    };
    match command {
        Command::Import { file, key, json } => {
            let rows = records::read_rows(&file)?;
            let now = roster_engine::clock::rfc3339(cx.clock.now());
            let report = records::import(&store, rows, &key, "import", &now).await?;
            print_import(&file, &report, json)
        }
        Command::List { fields, json } => {
            let mut all = Vec::new();
            store
                .records
                .scan_records(&mut |r| {
                    all.push(RecordRow { id: r.id, fields: r.fields, version: r.version });
                    true
                })
                .await?;
            print_list(&all, &fields, json)?;
            Ok(Outcome::Ok)
        }
        Command::Show { value, key, json } => {
            let record = records::find(&store, &key, &value).await?;
            print_record(&record, json)
        }
    }
}

/// `records import`'s report, from the store or from serve (exit 1 if any row was refused).
fn print_import(file: &std::path::Path, report: &records::ImportReport, json: bool) -> anyhow::Result<Outcome> {
    if json {
        output::json(report)?;
    } else {
        println!(
            "{}: {} read, {} created, {} updated, {} unchanged, {} refused",
            file.display(),
            report.read,
            report.created,
            report.updated,
            report.unchanged,
            report.refused.len()
        );
        for (row, why) in &report.refused {
            println!("  row {row}: {why}");
        }
    }
    Ok(if report.refused.is_empty() { Outcome::Ok } else { Outcome::Failed })
}

/// `records show`: one person with every field and where it came from.
fn print_record(record: &Record, json: bool) -> anyhow::Result<Outcome> {
    if json {
        return output::json(record).map(|_| Outcome::Ok);
    }
    println!(
        "record {} (version {}, created {}, updated {})",
        record.id, record.version, record.created_at, record.updated_at
    );
    let rows: Vec<Vec<String>> = record
        .fields
        .iter()
        .map(|(k, v)| {
            let p = record.provenance.get(k).map(|p| format!("{} at {}", p.source, p.at)).unwrap_or_default();
            vec![k.clone(), output::cell(Some(v), 60), p]
        })
        .collect();
    output::table(&["FIELD", "VALUE", "WRITTEN BY"], &rows);
    Ok(Outcome::Ok)
}

/// The same commands through `roster serve`'s API while it holds the store.
async fn run_remote(command: Command, cx: &Context) -> anyhow::Result<Outcome> {
    let remote = Remote::find(cx)?;
    match command {
        Command::Import { file, key, json } => {
            let rows = records::read_rows(&file)?;
            let report = remote.post("/v1/records/import", &ImportRequest { rows, key }).await?;
            print_import(&file, &report, json)
        }
        Command::List { fields, json } => {
            let list: Vec<RecordRow> = remote.get("/v1/records", remote::NO_QUERY).await?;
            print_list(&list, &fields, json)?;
            Ok(Outcome::Ok)
        }
        Command::Show { value, key, json } => {
            let record = remote.get(&format!("/v1/records/{value}"), &RecordQuery { limit: None, key }).await?;
            print_record(&record, json)
        }
    }
}

/// Records as a table of the chosen fields, or as JSON.
fn print_list(all: &[RecordRow], fields: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(&all);
    }
    let names: Vec<&str> = fields.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
    let mut headers = vec!["ID"];
    headers.extend(names.iter().copied());
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|r| {
            let mut row = vec![output::cell(Some(&serde_json::Value::String(r.id.to_string())), 40)];
            row.extend(names.iter().map(|n| output::cell(r.fields.get(*n), 40)));
            row
        })
        .collect();
    output::table(&headers, &rows);
    println!("{} record{}", all.len(), if all.len() == 1 { "" } else { "s" });
    Ok(())
}
