//! Everything one store holds, moved into another, empty one (`roster store copy`), whatever
//! the two backends are.

use std::collections::BTreeSet;

use super::{ItemKind, Store, StoreCounts, StoreError, StoreResult, StoredItem};

/// Items read and written at a time, so a large store is never held in memory whole.
const BATCH: usize = 500;

/// What both stores held once the copy was done (the same, when it succeeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    pub source: StoreCounts,
    pub target: StoreCounts,
}

/// Copies every item `from` holds into `to`, kind by kind ([`ItemKind::ALL`]) in batches,
/// exactly as stored: ids, provenance, event order, dedupe keys and sealed credentials.
/// `progress` is told each kind before its first batch (`0`) and how many of it were
/// copied after every batch. Then both stores are counted, and the copy fails unless they
/// hold the same.
///
/// `to` must hold nothing yet (a new store). Nothing should write to `from` while it is
/// copied: stop roster on it first.
pub async fn copy_store(from: &Store, to: &Store, mut progress: impl FnMut(ItemKind, u64)) -> StoreResult<CopyReport> {
    let held = to.transfer.counts().await?;
    if !held.is_empty() {
        return Err(StoreError::conflict(format!(
            "the target store already holds {held}; copy only into an empty store"
        )));
    }
    for kind in ItemKind::ALL {
        progress(kind, 0);
        let mut copied = 0;
        let mut last: Option<StoredItem> = None;
        loop {
            let page = from.transfer.export(kind, last.as_ref(), BATCH).await?;
            let Some(tail) = page.last().cloned() else { break };
            copied += page.len() as u64;
            to.transfer.import(page).await?;
            last = Some(tail);
            progress(kind, copied);
        }
    }
    let report = CopyReport { source: from.transfer.counts().await?, target: to.transfer.counts().await? };
    let differences: Vec<String> = report
        .source
        .by_kind()
        .into_iter()
        .zip(report.target.by_kind())
        .filter(|((_, source), (_, target))| source != target)
        .map(|((kind, source), (_, target))| format!("{kind}: {source} in the source, {target} in the target"))
        .collect();
    if !differences.is_empty() {
        return Err(StoreError::conflict(format!(
            "the copy does not hold what its source holds ({}); was roster running on the source meanwhile? \
             Stop it, and copy again into a new empty store",
            differences.join("; ")
        )));
    }
    let target_fields = indexed_fields(to).await?;
    let missing: Vec<String> = indexed_fields(from).await?.difference(&target_fields).cloned().collect();
    if !missing.is_empty() {
        return Err(StoreError::conflict(format!(
            "the copy does not index {} as its source does; copy again into a new empty store",
            missing.join(", ")
        )));
    }
    Ok(report)
}

async fn indexed_fields(store: &Store) -> StoreResult<BTreeSet<String>> {
    let mut fields = BTreeSet::new();
    let mut last = None;
    loop {
        let page = store.transfer.export(ItemKind::IndexedFields, last.as_ref(), BATCH).await?;
        let Some(tail) = page.last().cloned() else { return Ok(fields) };
        fields.extend(page.into_iter().filter_map(|item| match item {
            StoredItem::IndexedField(field) => Some(field),
            _ => None,
        }));
        last = Some(tail);
    }
}
