//! Which records a workflow's begin rules can accept, as field-index lookups, so that a
//! schedule fire or a batch reads those candidates instead of every record.
//!
//! The rules are still checked on every candidate, so a lookup may find more than the rules
//! accept but never less: a rule becomes a lookup only where the index's key texts
//! ([`key_text`]: trimmed, emails lowercased, numbers and booleans as JSON writes them)
//! provably keep what the rule compares.
//!
//! - `equals` a text that reads as neither a number nor a boolean: that key (a boolean text
//!   also looks up the boolean). `in` a list of such texts: those keys.
//! - `starts_with` a text that neither begins nor ends with space: keys with that prefix (and
//!   with its lowercase, for emails).
//! - `before` / `on_or_before` / `after` / `on_or_after` a date or timestamp: key ranges
//!   that hold every text the rule reads as a date on the accepting side, whatever form
//!   it is written in ([`roster_blocks::rules::day_of`]).
//!
//! In an `all`, the most selective such rule is looked up (equals, then in, then
//! starts_with, then a date); an `any` is looked up as the union of its branches when every
//! branch can be. Anything else (`not`, numbers, `contains`, ...) reads every record.

use jiff::ToSpan;
use jiff::civil::Date;
use roster_blocks::rules::{Condition, Op, Rule, compared_text, day_of, equal_values};
use serde_json::Value;

use crate::run::record_field;
use crate::store::{KeyMatch, KeyQuery, key_prefixes, key_text};

/// The lookups whose union holds every record `rules` accept, with `time` (`now`, `today`)
/// as the values' templates see it; `None` when every record has to be read.
pub fn candidates(rules: &Condition, time: &Value) -> Option<Vec<KeyQuery>> {
    plan(rules, time).map(|p| p.queries)
}

/// Every field a lookup for `rules` may read, whatever their values render to: what
/// [`crate::service::Service::prepare_indexes`] indexes.
pub fn lookup_fields(rules: &Condition) -> Vec<String> {
    let mut fields = Vec::new();
    for field in fields_of(rules).unwrap_or_default() {
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    fields
}

/// Lookups for a condition, ranked by how few records they are likely to find.
struct Plan {
    rank: Rank,
    queries: Vec<KeyQuery>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Equals,
    In,
    StartsWith,
    Range,
}

fn plan(condition: &Condition, time: &Value) -> Option<Plan> {
    match condition {
        Condition::Rule(rule) => rule_plan(rule, time),
        // Any one conjunct's candidates hold all the conjunction accepts.
        Condition::All(items) => items.iter().filter_map(|c| plan(c, time)).min_by_key(|p| (p.rank, p.queries.len())),
        Condition::Any(items) => {
            let plans = items.iter().map(|c| plan(c, time)).collect::<Option<Vec<Plan>>>()?;
            let rank = plans.iter().map(|p| p.rank).max().unwrap_or(Rank::Equals);
            Some(Plan { rank, queries: plans.into_iter().flat_map(|p| p.queries).collect() })
        }
        Condition::Not(_) => None,
    }
}

fn rule_plan(rule: &Rule, time: &Value) -> Option<Plan> {
    let field = record_field(&rule.field)?;
    let template = rule.value.as_ref()?;
    let want = template.render(time).ok()?;
    // The check renders `now` a moment later than this; only the date ops, which compare
    // by day and look a day or two wider, may use it.
    let uses_now = template.variables().iter().any(|p| p.root() == "now");
    let (rank, matches) = match rule.op {
        Op::Equals if !uses_now => (Rank::Equals, vec![KeyMatch::OneOf(equal_keys(&want)?)]),
        Op::In if !uses_now => {
            let keys = match &want {
                Value::Array(options) => options.iter().map(equal_keys).collect::<Option<Vec<_>>>()?.concat(),
                single => equal_keys(single)?,
            };
            (Rank::In, vec![KeyMatch::OneOf(keys)])
        }
        Op::StartsWith if !uses_now => {
            let prefixes = key_prefixes(&compared_text(&want)?)?;
            (Rank::StartsWith, prefixes.into_iter().map(KeyMatch::StartsWith).collect())
        }
        Op::Before | Op::OnOrBefore => (Rank::Range, days_up_to(day_of(&want)?)?),
        Op::After | Op::OnOrAfter => (Rank::Range, days_from(day_of(&want)?)?),
        _ => return None,
    };
    let queries = matches.into_iter().map(|matches| KeyQuery { field: field.to_string(), matches }).collect();
    Some(Plan { rank, queries })
}

/// The key texts of every value that equals `want`; `None` when one has none (a blank text
/// is not indexed) or there are too many.
fn equal_keys(want: &Value) -> Option<Vec<String>> {
    equal_values(want)?.iter().map(key_text).collect()
}

/// Key ranges holding every text the date ops read as a UTC day on or before `day`. Such a
/// text's written date is at most two days later. Sorted as text, `YYYY-MM-DD` dates and
/// signed years (`+`, `-` sort before digits) fall below the first date too late; `YYYYMMDD`
/// dates sort after every `YYYY-` date of their year, so that year gets a range of its own.
fn days_up_to(day: Date) -> Option<Vec<KeyMatch>> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let end = day.checked_add(3.days()).ok()?;
    let year = four_digit_year(end)?;
    Some(vec![
        KeyMatch::Range { lower: Unbounded, upper: Excluded(format!("{year}-{:02}-{:02}", end.month(), end.day())) },
        KeyMatch::Range {
            lower: Included(format!("{year}0")),
            upper: Excluded(format!("{year}{:02}{:02}", end.month(), end.day())),
        },
    ])
}

/// Key ranges holding every text the date ops read as a UTC day on or after `day`: written
/// dates from two days earlier on (`YYYYMMDD` dates of a year sort after its `YYYY-` ones),
/// and every signed year (texts starting with `+` or `-`).
fn days_from(day: Date) -> Option<Vec<KeyMatch>> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let start = day.checked_sub(2.days()).ok()?;
    let year = four_digit_year(start)?;
    Some(vec![
        KeyMatch::Range {
            lower: Included(format!("{year}-{:02}-{:02}", start.month(), start.day())),
            upper: Unbounded,
        },
        // '+', ',' and '-' are consecutive.
        KeyMatch::Range { lower: Included("+".into()), upper: Excluded(".".into()) },
    ])
}

/// `YYYY` for years 0 to 9999, the ones written with four digits and no sign.
fn four_digit_year(date: Date) -> Option<String> {
    (0..=9999).contains(&date.year()).then(|| format!("{:04}", date.year()))
}

/// The fields of the rules a lookup may use, along the same paths [`plan`] takes.
fn fields_of(condition: &Condition) -> Option<Vec<String>> {
    match condition {
        Condition::Rule(rule) => {
            let pushable = matches!(
                rule.op,
                Op::Equals | Op::In | Op::StartsWith | Op::Before | Op::OnOrBefore | Op::After | Op::OnOrAfter
            );
            let field = record_field(&rule.field).filter(|_| pushable && rule.value.is_some())?;
            Some(vec![field.to_string()])
        }
        // Which conjunct is looked up depends on what the values render to.
        Condition::All(items) => Some(items.iter().filter_map(fields_of).flatten().collect()),
        Condition::Any(items) => Some(items.iter().map(fields_of).collect::<Option<Vec<_>>>()?.concat()),
        Condition::Not(_) => None,
    }
}

#[cfg(test)]
mod tests;
