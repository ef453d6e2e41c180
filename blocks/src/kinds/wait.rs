//! `wait`: the run rests, holding no worker, until a duration has passed (`for`) or an
//! instant comes (`until`, a template), then goes on at `next`. The record is read again
//! when it wakes, so a condition after the wait sees the person as they are then.

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde_json::Value;

use crate::diag::{ConfigError, Diagnostics};
use crate::fields::Fields;
use crate::path::Path;
use crate::template::{Escape, Template};

use super::plan::{Plan, Refusal, Wake, Wording};
use super::{Block, BlockKind, CompileContext, Edge, Registration};

pub const KIND: Registration = Registration {
    name: "wait",
    about: "pause the run for a duration (`for`) or until an instant (`until`), then go on",
    edge_keys: &["next"],
    compile: |value, path, _: &CompileContext, diags| WaitBlock::compile(value, path, diags).map(Block::new),
};

/// The longest `for` a wait accepts: longer is a typo (and a year is the longest notice
/// period people operations deal in).
pub const LONGEST_WAIT: Duration = Duration::from_secs(366 * 86_400);

#[derive(Debug, Clone)]
pub struct WaitBlock {
    pub until: WaitUntil,
    /// Where a date or a time without an offset is read; the machine's zone when absent.
    pub timezone: Option<TimeZone>,
    pub next: Option<String>,
}

#[derive(Debug, Clone)]
pub enum WaitUntil {
    /// This long after the step.
    For(Duration),
    /// The instant a template renders to.
    Until(Template),
}

impl WaitBlock {
    pub fn compile(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<WaitBlock> {
        let known = ["type", "description", "for", "until", "timezone", "next"];
        let f = Fields::open(value, path, "a wait block", &known, diags)?;
        let timezone = match f.opt_string("timezone", diags) {
            Some(name) => Some(super::begin::compile_zone(name, &f.at("timezone"), diags)?),
            None => None,
        };
        let next = f.opt_string("next", diags).map(str::to_string);
        let until = match (f.opt_string("for", diags), f.opt_string("until", diags)) {
            (Some(_), Some(_)) => {
                diags.push(
                    ConfigError::new(f.at("until"), "a wait block takes `for` or `until`, not both")
                        .with_help("keep `for` to wait a duration (\"3d\"), or `until` to wait for an instant"),
                );
                return None;
            }
            // One of them is there but is no string: that error is enough.
            (None, None) if [f.get("for"), f.get("until")].iter().flatten().any(|v| !v.is_null()) => return None,
            (None, None) => {
                diags.push(
                    ConfigError::new(f.at("for"), "a wait block needs `for` or `until`")
                        .with_help("e.g. \"for\": \"3d\", or \"until\": \"<<end_date>>T17:00:00\""),
                );
                return None;
            }
            (Some(text), None) => match crate::duration::parse(text, LONGEST_WAIT) {
                Ok(d) if d.is_zero() => {
                    diags.error(f.at("for"), "a wait of no time does nothing; remove the block or give a duration");
                    return None;
                }
                Ok(d) => WaitUntil::For(d),
                Err(reason) => {
                    diags.error(f.at("for"), reason);
                    return None;
                }
            },
            (None, Some(text)) => {
                let template = super::api::compile_template(text, &f.at("until"), diags)?;
                // A fixed instant is checked now rather than when a run reaches it.
                if let Some(literal) = template.literal()
                    && let Err(reason) = instant(literal, timezone.as_ref())
                {
                    diags.error(f.at("until"), reason);
                    return None;
                }
                WaitUntil::Until(template)
            }
        };
        Some(WaitBlock { until, timezone, next })
    }

    /// When the wait in `scope` ends.
    pub fn wake(&self, scope: &Value) -> Result<Wake, (String, Option<String>)> {
        match &self.until {
            WaitUntil::For(d) => Ok(Wake::After(*d)),
            WaitUntil::Until(template) => {
                let text = template
                    .render_string(scope, Escape::None)
                    .map_err(|e| (e.to_string(), e.variable().map(str::to_string)))?;
                instant(&text, self.timezone.as_ref()).map(Wake::At).map_err(|reason| (reason, None))
            }
        }
    }
}

/// Reads an instant to wait until: RFC 3339 with an offset (`2027-03-01T17:00:00Z`), or a
/// time (`2027-03-01T17:00`) or a date (its start) in `zone`, the machine's when `None`.
pub fn instant(text: &str, zone: Option<&TimeZone>) -> Result<Timestamp, String> {
    let t = text.trim();
    if let Ok(at) = t.parse::<Timestamp>() {
        return Ok(at);
    }
    let zone = zone.cloned().unwrap_or_else(TimeZone::system);
    let local =
        t.parse::<DateTime>().or_else(|_| t.parse::<Date>().map(|d| d.to_datetime(jiff::civil::Time::midnight())));
    match local {
        Ok(local) => local.to_zoned(zone).map(|z| z.timestamp()).map_err(|e| format!("`{t}`: {e}")),
        Err(_) => Err(format!(
            "`{t}` is not an instant to wait until; write it like \"2027-03-01T17:00:00Z\", \"2027-03-01T17:00\" \
             (in the block's `timezone`) or \"2027-03-01\" (the start of that day)"
        )),
    }
}

impl BlockKind for WaitBlock {
    fn kind(&self) -> &'static str {
        "wait"
    }

    fn edges(&self) -> Vec<Edge> {
        super::edges(&[("next", &self.next)])
    }

    fn variables(&self) -> Vec<Path> {
        match &self.until {
            WaitUntil::For(_) => Vec::new(),
            WaitUntil::Until(t) => t.variables(),
        }
    }

    fn label(&self) -> String {
        match &self.until {
            WaitUntil::For(d) => format!("wait {}", crate::duration::describe(*d)),
            WaitUntil::Until(t) => format!("wait until {}", t.source()),
        }
    }

    fn plan(&self, scope: &Value, _key: &dyn Fn(Option<usize>) -> String) -> Plan<'_> {
        match self.wake(scope) {
            Ok(wake) => Plan::Wait { wake, next: self.next.clone() },
            Err((message, variable)) => Plan::Refuse(Refusal {
                message,
                variable,
                in_run: Wording::InContext,
                in_dry_run: Wording::InContext,
                on_error: None,
                dry_next: self.next.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn compile(value: Value) -> Result<WaitBlock, Vec<String>> {
        let mut diags = Diagnostics::new();
        match WaitBlock::compile(&value, "blocks.pause", &mut diags) {
            Some(block) if diags.is_empty() => Ok(block),
            _ => Err(diags.errors().iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn a_for_that_is_no_string_gets_one_error_saying_so() {
        let errors = compile(json!({"type": "wait", "for": 3})).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("`for` must be a string, found a number"), "{errors:?}");
    }

    fn plan(block: &WaitBlock, scope: Value) -> Plan<'_> {
        block.plan(&scope, &|_| String::new())
    }

    #[test]
    fn a_duration_plans_a_wait_of_that_long_then_the_next_block() {
        let block = compile(json!({"type": "wait", "for": "3d", "next": "deactivate"})).unwrap();
        match plan(&block, json!({})) {
            Plan::Wait { wake, next } => {
                assert_eq!(wake, Wake::After(Duration::from_secs(3 * 86_400)));
                assert_eq!(next.as_deref(), Some("deactivate"));
                let now: Timestamp = "2027-03-01T09:00:00Z".parse().unwrap();
                assert_eq!(wake.instant(now).to_string(), "2027-03-04T09:00:00Z");
            }
            _ => panic!("a wait"),
        }
        assert_eq!(block.label(), "wait 3 days");
    }

    #[test]
    fn an_instant_is_rendered_from_the_record_in_the_blocks_zone() {
        let block =
            compile(json!({"type": "wait", "until": "<<end_date>>T17:00", "timezone": "Europe/London"})).unwrap();
        let Plan::Wait { wake, next } = plan(&block, json!({"end_date": "2027-07-01"})) else { panic!("a wait") };
        // London is on summer time (UTC+1) in July.
        assert_eq!(wake, Wake::At("2027-07-01T16:00:00Z".parse().unwrap()));
        assert_eq!(next, None);
        assert_eq!(block.variables().iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["end_date"]);

        let block = compile(json!({"type": "wait", "until": "<<leave_at>>"})).unwrap();
        let Plan::Wait { wake, .. } = plan(&block, json!({"leave_at": "2027-03-01T09:30:00+02:00"})) else {
            panic!("a wait")
        };
        assert_eq!(wake, Wake::At("2027-03-01T07:30:00Z".parse().unwrap()));
    }

    #[test]
    fn an_instant_that_cannot_be_read_is_refused_and_a_dry_run_goes_on() {
        let block = compile(json!({"type": "wait", "until": "<<end_date>>", "next": "done"})).unwrap();
        let Plan::Refuse(r) = plan(&block, json!({"end_date": "next tuesday"})) else { panic!("a refusal") };
        assert!(r.message.contains("not an instant to wait until"), "{}", r.message);
        assert_eq!((r.dry_next.as_deref(), r.on_error.as_deref()), (Some("done"), None));
        let Plan::Refuse(r) = plan(&block, json!({})) else { panic!("a refusal") };
        assert_eq!(r.variable.as_deref(), Some("end_date"));
    }

    #[test]
    fn bad_waits_are_refused_at_load_with_their_path() {
        let cases = [
            (json!({"type": "wait"}), "blocks.pause.for: a wait block needs `for` or `until`"),
            (json!({"type": "wait", "for": "3d", "until": "2027-03-01"}), "blocks.pause.until: a wait block takes"),
            (json!({"type": "wait", "for": "soon"}), "blocks.pause.for: `soon` is not a duration"),
            (json!({"type": "wait", "for": "400d"}), "blocks.pause.for: `400d` is longer than the maximum of 366 days"),
            (json!({"type": "wait", "for": "0s"}), "blocks.pause.for: a wait of no time does nothing"),
            (json!({"type": "wait", "until": "tomorrow"}), "blocks.pause.until: `tomorrow` is not an instant"),
            (
                json!({"type": "wait", "for": "1h", "timezone": "Mars/Olympus"}),
                "blocks.pause.timezone: unknown time zone",
            ),
            (json!({"type": "wait", "for": "1h", "after": "x"}), "blocks.pause.after: unknown field `after`"),
        ];
        for (value, expected) in cases {
            let errors = compile(value.clone()).unwrap_err();
            assert!(errors.iter().any(|e| e.contains(expected)), "{value}: {errors:?}");
        }
    }
}
