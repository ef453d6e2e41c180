//! `begin`: when a workflow runs and for whom.
//!
//! The trigger says when (by hand, on a record event, on a schedule); the rules say for
//! whom. Rules always apply: an event or a schedule only starts a run for a record the
//! rules accept, and a run by hand is refused with the rule that failed.

use serde_json::Value;

use crate::diag::{ConfigError, Diagnostics, suggest};
use crate::fields::Fields;
use crate::rules::Condition;

/// When a workflow starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Only by hand (`roster run`).
    Manual,
    /// When a record is created by a sync or an import.
    Created,
    /// When a record changes; with `fields`, only when one of those fields changed.
    Updated { fields: Vec<String> },
    /// On a schedule.
    Schedule(Schedule),
}

/// A cron schedule in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Five-field cron (`minute hour day-of-month month day-of-week`).
    pub cron: String,
    /// IANA time zone name; UTC when absent.
    pub timezone: Option<String>,
}

impl Schedule {
    /// The zone the schedule fires in, and its fires' `<<today>>` is a date in.
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, String> {
        match &self.timezone {
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| format!("time zone {name}: {e}")),
            None => Ok(jiff::tz::TimeZone::UTC),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Begin {
    pub trigger: Trigger,
    /// `None` means every record qualifies.
    pub rules: Option<Condition>,
    pub next: String,
}

impl Begin {
    pub fn compile(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<Begin> {
        let f = Fields::open(value, path, "the begin block", &["trigger", "rules", "next", "description"], diags)?;
        let trigger = match f.get("trigger") {
            None => Some(Trigger::Manual),
            Some(t) => compile_trigger(t, &f.at("trigger"), diags),
        };
        // Every field is checked before giving up, so one pass reports them all.
        let rules = match f.get("rules") {
            None | Some(Value::Null) => Some(None),
            Some(v) => Condition::compile(v, &f.at("rules"), diags).map(Some),
        };
        let next = f.string("next", diags).map(str::to_string);
        Some(Begin { trigger: trigger?, rules: rules?, next: next? })
    }
}

const TRIGGER_KEYS: &[&str] = &["manual", "on", "fields", "schedule"];

fn compile_trigger(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<Trigger> {
    let f = Fields::open(value, path, "a trigger", TRIGGER_KEYS, diags)?;
    if let Some(schedule) = f.get("schedule") {
        return compile_schedule(schedule, &f.at("schedule"), diags).map(Trigger::Schedule);
    }
    if let Some(on) = f.opt_string("on", diags) {
        let fields: Vec<String> = match f.get("fields") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
            Some(_) => {
                diags.error(f.at("fields"), "`fields` must be an array of record field names");
                Vec::new()
            }
        };
        return match on {
            "created" if fields.is_empty() => Some(Trigger::Created),
            "created" => {
                diags.error(f.at("fields"), "`fields` only applies to `\"on\": \"updated\"`");
                None
            }
            "updated" => Some(Trigger::Updated { fields }),
            other => {
                diags.push(
                    ConfigError::new(f.at("on"), format!("unknown event `{other}`"))
                        .with_help(suggest(other, ["created", "updated"])),
                );
                None
            }
        };
    }
    match f.opt_bool("manual", diags) {
        Some(true) => Some(Trigger::Manual),
        _ => {
            diags.push(
                ConfigError::new(path, "the trigger says neither `manual`, `on` nor `schedule`").with_help(
                    r#"use {"manual": true}, {"on": "created"}, {"on": "updated", "fields": [...]} or {"schedule": "daily"}"#,
                ),
            );
            None
        }
    }
}

/// The IANA time zone `name` (at `path`), or an error saying how to name one.
pub(crate) fn compile_zone(name: &str, path: &str, diags: &mut Diagnostics) -> Option<jiff::tz::TimeZone> {
    match jiff::tz::TimeZone::get(name) {
        Ok(zone) => Some(zone),
        Err(_) => {
            diags.push(
                ConfigError::new(path, format!("unknown time zone `{name}`"))
                    .with_help("use an IANA name such as \"America/New_York\" or \"Europe/London\""),
            );
            None
        }
    }
}

/// Compiles a schedule: `"daily"`, `"hourly"`, a cron string, or `{cron|daily|hourly, timezone}`.
pub fn compile_schedule(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<Schedule> {
    let (cron, timezone) = match value {
        Value::String(s) => (shorthand(s).unwrap_or_else(|| s.clone()), None),
        Value::Object(_) => {
            let f = Fields::open(value, path, "a schedule", &["cron", "daily", "hourly", "timezone"], diags)?;
            let timezone = f.opt_string("timezone", diags).map(str::to_string);
            let cron = if let Some(c) = f.opt_string("cron", diags) {
                shorthand(c).unwrap_or_else(|| c.to_string())
            } else if let Some(at) = f.opt_string("daily", diags) {
                match parse_hh_mm(at) {
                    Some((h, m)) => format!("{m} {h} * * *"),
                    None => {
                        diags.error(
                            f.at("daily"),
                            format!("`{at}` is not a time of day; write it as HH:MM, e.g. \"09:00\""),
                        );
                        return None;
                    }
                }
            } else if f.opt_bool("hourly", diags) == Some(true) {
                "0 * * * *".to_string()
            } else {
                diags.error(path, "a schedule needs `cron`, `daily` (\"HH:MM\") or `hourly`");
                return None;
            };
            (cron, timezone)
        }
        _ => {
            diags.error(path, "`schedule` must be \"daily\", \"hourly\", a cron string or an object");
            return None;
        }
    };
    if cron.split_whitespace().count() != 5 {
        diags.push(ConfigError::new(path, format!("`{cron}` is not a five-field cron expression")).with_help(
            "write minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1-5\", or \"daily\"/\"hourly\"",
        ));
        return None;
    }
    let zone = match &timezone {
        None => jiff::tz::TimeZone::UTC,
        Some(tz) => compile_zone(tz, &crate::diag::join(path, "timezone"), diags)?,
    };
    // The scheduler parses the same text with the same parser, so what loads here fires.
    let parsed: croner::Cron = match cron.parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            diags.push(ConfigError::new(path, format!("`{cron}` is not a valid cron expression: {e}")).with_help(
                "minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-7; e.g. \"0 9 * * 1-5\"",
            ));
            return None;
        }
    };
    // `0 0 30 2 *` parses but never comes; a fixed start keeps the check repeatable.
    let start = jiff::Timestamp::from_second(1_767_225_600).unwrap_or_default().to_zoned(zone);
    if parsed.find_next_occurrence(&start, true).is_err() {
        diags.push(
            ConfigError::new(path, format!("`{cron}` never fires (no such date)"))
                .with_help("check the day of the month against the month, e.g. February has no 30th"),
        );
        return None;
    }
    Some(Schedule { cron, timezone })
}

fn shorthand(s: &str) -> Option<String> {
    match s.trim() {
        "daily" | "@daily" => Some("0 0 * * *".into()),
        "hourly" | "@hourly" => Some("0 * * * *".into()),
        _ => None,
    }
}

fn parse_hh_mm(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule_errors(value: Value) -> Vec<String> {
        let mut diags = Diagnostics::new();
        compile_schedule(&value, "begin.trigger.schedule", &mut diags);
        diags.errors().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_cron_that_cannot_fire_is_refused_at_load() {
        for cron in ["0 25 * * *", "61 * * * *", "0 0 32 * *", "0 0 * 13 *", "0 0 * * 9", "a b c d e"] {
            let errors = schedule_errors(json!(cron));
            assert_eq!(errors.len(), 1, "{cron}: {errors:?}");
            assert!(errors[0].contains("is not a valid cron expression"), "{cron}: {errors:?}");
        }
        let errors = schedule_errors(json!({"cron": "0 0 30 2 *", "timezone": "Europe/Paris"}));
        assert!(errors[0].contains("never fires"), "{errors:?}");
        for fine in [json!("0 9 * * 1-5"), json!("daily"), json!({"daily": "23:59", "timezone": "Asia/Tokyo"})] {
            assert!(schedule_errors(fine.clone()).is_empty(), "{fine}");
        }
    }
}
