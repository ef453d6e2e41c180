//! Dry runs: the driver with a transport that sends nothing and a persistence that writes
//! nothing, showing each step instead.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use roster_blocks::kinds::api::RenderedRequest;
use serde_json::{Map, Value};

use super::driver::Driver;
use super::journal_policy::DryPersistence;
use super::steps::Steps;
use super::transport::DryTransport;
use super::{Engine, Quiet};
use crate::error::{Error, Result};
use crate::model::{Record, RunState, RunTrigger};
use crate::workflow::Workflow;

/// One step of a dry run: what would be sent or decided, with nothing sent or written.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DryStep {
    pub block: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RenderedRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub changes: Map<String, Value>,
    /// A wait's end, on Roster's clock: a real run would rest until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The step needs what an earlier API block answers, which a dry run cannot know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<String>,
    /// The step would fail in a real run (a missing variable, a bad value).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub would_fail: bool,
}

impl DryStep {
    /// Records why the step cannot be shown: waiting on an earlier response (`variable`
    /// under `steps.NAME` of an API block this dry run did not send), or a real failure.
    pub(crate) fn blocked(&mut self, steps: &Steps, variable: Option<&str>, failure: String) {
        let earlier = variable.and_then(|v| roster_blocks::path::Path::parse(v).ok()).and_then(|p| {
            match (p.root(), p.segments().get(1)) {
                ("steps", Some(roster_blocks::path::Segment::Key(name))) if steps.is_unknown(name) => {
                    Some(name.clone())
                }
                _ => None,
            }
        });
        match earlier {
            Some(name) => {
                self.note = Some(format!("depends on the response of `{name}`"));
                self.depends_on = Some(name);
            }
            None => {
                self.note = Some(failure);
                self.would_fail = true;
            }
        }
    }
}

impl DryStep {
    pub(crate) fn new(block: &str, kind: &str) -> DryStep {
        DryStep {
            block: block.to_string(),
            kind: kind.to_string(),
            item: None,
            credential: None,
            request: None,
            branch: None,
            changes: Map::new(),
            wait_until: None,
            note: None,
            depends_on: None,
            would_fail: false,
        }
    }
}

impl Engine {
    /// Renders every request the run would send along the success path, sending nothing
    /// and writing nothing. API answers are unknown, so later steps see them as absent.
    pub fn dry_run(&self, wf: &Workflow, record: &Record) -> Result<Vec<DryStep>> {
        let mut run = self.blank_run(wf, record, RunTrigger::DryRun, self.clock.today());
        run.state = RunState::Running;
        let persistence = DryPersistence::new(record.clone());
        let mut driver = Driver {
            engine: self,
            wf,
            transport: &DryTransport,
            persistence: &persistence,
            run,
            steps: Steps::default(),
            observer: &mut Quiet,
            dry: Some(Vec::new()),
            deferred: Default::default(),
        };
        // Nothing in a dry run waits (no request, no write, no rate limit, no backoff), so
        // the driver finishes on its first poll.
        let polled = pin!(driver.run_blocks()).as_mut().poll(&mut Context::from_waker(Waker::noop()));
        match polled {
            Poll::Ready(done) => done?,
            Poll::Pending => return Err(Error::Refused("a dry run had to wait, which it never should".into())),
        }
        Ok(driver.dry.unwrap_or_default())
    }
}
