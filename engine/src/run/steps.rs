//! The `steps` scope: each finished step's output, as templates see it under
//! `steps.<block>`. Kept in memory while a run runs, and rebuilt from the journal when a
//! run (re)starts, so the stored run head never carries it.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::model::{JournalEntry, Run, StepPhase};
use crate::workflow::Workflow;

#[derive(Debug, Default, Clone)]
pub(crate) struct Steps(Map<String, Value>, BTreeSet<String>);

impl Steps {
    /// The outputs the journal's finished steps left, as the run saw them when it made them
    /// (response bodies as the journal keeps them).
    pub fn from_journal(wf: &Workflow, run: &Run, journal: &[JournalEntry]) -> Steps {
        let mut steps = Steps::default();
        for e in journal {
            let history = run.retry_block.as_deref() == Some(e.block.as_str()) && e.by_retry < run.retries;
            if e.phase != StepPhase::Finished || e.retried || history {
                continue;
            }
            if let Some(branch) = &e.branch {
                steps.branch(&e.block, branch);
            } else if let Some(until) = &e.wake_at {
                steps.waited(&e.block, until);
            } else if wf.block(&e.block).is_some_and(|b| b.exchange().is_some()) {
                steps.call(&e.block, e.item, result_of(e));
            } else if e.error.is_none() {
                let set = e.changes.iter().map(|(k, c)| (k.clone(), c.after.clone())).collect();
                steps.set(&e.block, set);
            }
        }
        steps
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// Whether `block` is an API block a dry run did not send, whose answer it cannot know.
    pub fn is_unknown(&self, block: &str) -> bool {
        self.1.contains(block)
    }

    pub fn branch(&mut self, block: &str, branch: &str) {
        self.0.insert(block.to_string(), json!({ "branch": branch }));
    }

    /// A wait's output: when it ended (`steps.NAME.until`).
    pub fn waited(&mut self, block: &str, until: &str) {
        self.0.insert(block.to_string(), json!({ "until": until }));
    }

    pub fn set(&mut self, block: &str, changes: Map<String, Value>) {
        self.0.insert(block.to_string(), json!({ "set": changes }));
    }

    /// What a dry run knows of an API block it did not send: nothing.
    pub fn unknown(&mut self, block: &str) {
        self.0.insert(block.to_string(), json!({"status": null, "response": null}));
        self.1.insert(block.to_string());
    }

    /// A call's result: the block's output for a single call, or one element of `items`
    /// for `for_each` (an attempt of the same item, from an old journal, replaces it).
    pub fn call(&mut self, block: &str, item: Option<usize>, result: Value) {
        if item.is_none() {
            self.0.insert(block.to_string(), result);
            return;
        }
        let entry = self.0.entry(block.to_string()).or_insert_with(|| json!({"items": []}));
        if let Some(status) = result.get("status") {
            entry["status"] = status.clone();
        }
        if let Some(Value::Array(items)) = entry.get_mut("items") {
            match items.last_mut() {
                Some(last) if last.get("index") == result.get("index") => *last = result,
                _ => items.push(result),
            }
        }
    }

    /// How many of a block's calls have a result (the rest are still to make).
    pub fn calls_done(&self, block: &str, for_each: bool) -> usize {
        match (for_each, self.0.get(block)) {
            (_, None) => 0,
            (true, Some(step)) => step.get("items").and_then(Value::as_array).map_or(0, Vec::len),
            (false, Some(_)) => 1,
        }
    }

    /// The error messages of a block's failed calls, in order.
    pub fn failures(&self, block: &str) -> Vec<String> {
        let Some(step) = self.0.get(block) else { return Vec::new() };
        let one = |v: &Value| v.get("error").and_then(Value::as_str).map(str::to_string);
        match step.get("items").and_then(Value::as_array) {
            Some(items) => items.iter().filter_map(one).collect(),
            None => one(step).into_iter().collect(),
        }
    }
}

/// A call's result as templates see it: `index`, `status` and `response` when it was
/// answered, `error` when it failed.
pub(crate) fn call_result(item: Option<usize>, answer: Option<(u16, &Value)>, error: Option<&str>) -> Value {
    let mut result = json!({ "index": item });
    if let Some((status, body)) = answer {
        result["status"] = json!(status);
        result["response"] = body.clone();
    }
    if let Some(error) = error {
        result["error"] = json!(error);
    }
    result
}

fn result_of(e: &JournalEntry) -> Value {
    let answer = e.status.map(|s| (s, e.response.as_ref().map_or(&Value::Null, |r| &r.body)));
    call_result(e.item, answer, e.error.as_deref())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn workflow() -> Workflow {
        let presets = crate::presets::built_in();
        let cx = roster_blocks::kinds::CompileContext { presets: &presets, credentials: None };
        let source = r#"{"name": "w", "begin": {"next": "cards"}, "blocks": {
            "cards": {"type": "api", "for_each": "<<cards>>", "request": {"method": "GET", "url": "https://h.test/<<item>>"},
                      "next": "check"},
            "check": {"type": "condition", "when": {"field": "x", "op": "is_empty"}, "then": "stamp"},
            "stamp": {"type": "update", "set": {"done": true}}}}"#;
        Workflow::compile(source, "w.json", &cx).unwrap()
    }

    fn entry(seq: u32, block: &str, item: Option<usize>, extra: Value) -> JournalEntry {
        let mut e = json!({"seq": seq, "block": block, "kind": "k", "phase": "finished", "attempt": 1,
                           "started_at": "t", "item": item});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(e).unwrap()
    }

    fn answer(status: u16, body: Value) -> Value {
        json!({"status": status, "response": {"status": status, "body": body, "elapsed_ms": 1, "pages": 1}})
    }

    fn run(retries: u32, retry_block: Option<&str>) -> Run {
        serde_json::from_value(json!({"id": "0190a1b2-0000-7000-8000-000000000000", "workflow": "w",
            "workflow_hash": "h", "record_id": "0190a1b2-0000-7000-8000-000000000001", "record_label": "r",
            "trigger": "manual", "state": "running", "current": "cards", "next_seq": 9, "created_at": "t",
            "updated_at": "t", "retries": retries, "retry_block": retry_block}))
        .unwrap()
    }

    #[test]
    fn the_journal_gives_back_what_each_step_left_and_skips_what_is_not_a_result() {
        let journal = vec![
            entry(0, "cards", Some(0), answer(200, json!("a"))),
            entry(1, "cards", Some(1), json!({"status": 503, "error": "busy", "retried": true})),
            entry(2, "cards", Some(1), answer(200, json!("b"))),
            entry(3, "cards", Some(2), json!({"phase": "started"})),
            entry(4, "check", None, json!({"branch": "then"})),
            entry(5, "stamp", None, json!({"changes": {"done": {"before": null, "after": true}}})),
        ];
        let steps = Steps::from_journal(&workflow(), &run(0, None), &journal).to_value();
        assert_eq!(steps["cards"]["items"].as_array().unwrap().len(), 2, "{steps}");
        assert_eq!(steps["cards"]["items"][1], json!({"index": 1, "status": 200, "response": "b"}));
        assert_eq!(steps["check"], json!({"branch": "then"}));
        assert_eq!(steps["stamp"], json!({"set": {"done": true}}));
    }

    #[test]
    fn a_retry_by_hand_sets_the_blocks_earlier_results_aside() {
        let mut retried = entry(1, "cards", Some(0), answer(200, json!("again")));
        retried.by_retry = 1;
        let journal = vec![entry(0, "cards", Some(0), json!({"status": 500, "error": "boom"})), retried];
        let steps = Steps::from_journal(&workflow(), &run(1, None), &journal[..1]);
        assert_eq!(steps.calls_done("cards", true), 1, "without a retry the failed item is a result");
        let steps = Steps::from_journal(&workflow(), &run(1, Some("cards")), &journal[..1]);
        assert_eq!(steps.calls_done("cards", true), 0, "after `runs retry` the block starts over");
        let steps = Steps::from_journal(&workflow(), &run(1, Some("cards")), &journal);
        assert_eq!(steps.failures("cards"), Vec::<String>::new());
        assert_eq!(steps.calls_done("cards", true), 1);
    }

    #[test]
    fn an_old_journal_attempt_of_the_same_item_is_replaced_by_the_next() {
        let journal = vec![
            entry(0, "cards", Some(0), json!({"status": 503, "error": "busy"})),
            entry(1, "cards", Some(0), answer(200, json!("a"))),
        ];
        let steps = Steps::from_journal(&workflow(), &run(0, None), &journal);
        assert_eq!(steps.calls_done("cards", true), 1);
        assert!(steps.failures("cards").is_empty());
    }
}
