//! Counters a test reads to prove what the engine did to the vendors (and what it did not).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which fake vendor a counter or setting belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Brex,
    Expensify,
    Sage,
}

impl Vendor {
    pub const ALL: [Vendor; 3] = [Vendor::Brex, Vendor::Expensify, Vendor::Sage];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Vendor::Brex => "brex",
            Vendor::Expensify => "expensify",
            Vendor::Sage => "sage",
        }
    }
}

impl std::str::FromStr for Vendor {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Vendor> {
        Vendor::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| anyhow::anyhow!("unknown vendor {s:?} (brex, expensify, sage)"))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultCounts {
    pub error_500: u64,
    pub rate_limit_429: u64,
    pub slow: u64,
    /// Every dropped connection, whichever side of the handler it happened on.
    pub drop_connection: u64,
    /// Of `drop_connection`: those dropped after the handler ran (side effect applied).
    pub drop_after_side_effect: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.error_500 + self.rate_limit_429 + self.slow + self.drop_connection
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VendorStats {
    /// Vendor requests (admin `/_sandbox/` calls excluded).
    pub requests: u64,
    /// Keyed `"METHOD /route/{param}"`; unknown paths count under `"METHOD (unmatched)"`.
    pub requests_by_route: BTreeMap<String, u64>,
    /// Responses actually sent, by HTTP status (dropped connections are not here).
    pub responses_by_status: BTreeMap<u16, u64>,
    pub faults: FaultCounts,
    /// Real rate-limit rejections (not injected faults).
    pub rate_limited: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SideEffects {
    pub users_invited: u64,
    pub users_updated: u64,
    pub cards_created: u64,
    pub cards_updated: u64,
    pub cards_locked: u64,
    pub cards_unlocked: u64,
    pub cards_terminated: u64,
}

impl SideEffects {
    pub fn total(&self) -> u64 {
        self.users_invited
            + self.users_updated
            + self.cards_created
            + self.cards_updated
            + self.cards_locked
            + self.cards_unlocked
            + self.cards_terminated
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub brex: VendorStats,
    pub expensify: VendorStats,
    pub sage: VendorStats,
    /// Brex writes applied (replays excluded).
    pub side_effects: SideEffects,
    /// Brex POST/PUT answered from the idempotency store instead of being applied again.
    pub idempotent_replays: u64,
    /// Replays whose method, path or body differed from the first use of the key (a client bug).
    pub idempotency_key_conflicts: u64,
    /// Cards created per Idempotency-Key: any value above 1 would be a double create.
    pub cards_created_by_key: BTreeMap<String, u32>,
    /// Cards created through the API per `"{user_id}/{card_name}"`.
    pub cards_created_by_owner_and_name: BTreeMap<String, u32>,
    /// Card creates whose body equals an earlier applied create (sent under another key or
    /// none): a retry that was not idempotent. Invites cannot duplicate: Brex rejects a known
    /// email.
    pub duplicate_side_effects: u64,
    pub sage_tokens_issued: u64,
}

impl Stats {
    pub fn vendor(&self, vendor: Vendor) -> &VendorStats {
        match vendor {
            Vendor::Brex => &self.brex,
            Vendor::Expensify => &self.expensify,
            Vendor::Sage => &self.sage,
        }
    }

    pub(crate) fn vendor_mut(&mut self, vendor: Vendor) -> &mut VendorStats {
        match vendor {
            Vendor::Brex => &mut self.brex,
            Vendor::Expensify => &mut self.expensify,
            Vendor::Sage => &mut self.sage,
        }
    }

    pub fn total_requests(&self) -> u64 {
        Vendor::ALL.iter().map(|v| self.vendor(*v).requests).sum()
    }

    /// Requests to one route, e.g. `stats.route(Vendor::Brex, "POST /v2/cards")`.
    pub fn route(&self, vendor: Vendor, route: &str) -> u64 {
        self.vendor(vendor).requests_by_route.get(route).copied().unwrap_or(0)
    }

    pub fn status(&self, vendor: Vendor, status: u16) -> u64 {
        self.vendor(vendor).responses_by_status.get(&status).copied().unwrap_or(0)
    }
}
