//! Compact forms for values the embedded store keeps for a long time and rarely reads: the
//! head of a finished run, and a finished run's whole journal as one value.
//!
//! A packed value starts with a tag byte that JSON never starts with, then a zstd frame
//! compressed against a fixed dictionary of the field names and values runs and journal
//! entries repeat. The dictionary is part of the format: a tag names the dictionary it was
//! packed with, and a changed dictionary needs a new tag (old values keep decoding).

use std::cell::RefCell;
use std::sync::LazyLock;

use crate::store::{StoreError, StoreResult};

/// A packed JSON value.
const PACKED_V1: u8 = 0x01;
/// A packed journal: the tag, the number of entries (u32, little endian), then a packed
/// JSON array of them.
const JOURNAL_V1: u8 = 0x02;

/// zstd level: finished runs are written once, so a little more CPU for size is fine.
const LEVEL: i32 = 3;

/// What a run head and its journal entries repeat, as raw content zstd can refer back to.
/// Fixed forever for the v1 tags.
const DICTIONARY_V1: &[u8] = br#"{"seq":0,"block":"","kind":"api","phase":"finished","attempt":1,"item":0,"request":{"method":"GET","url":"/","headers":[["Idempotency-Key","roster-"],["Content-Type","application/json"]],"body":{}},"status":200,"response":{"status":200,"body":{"id":"","status":"ACTIVE","email":"","first_name":"","last_name":"","metadata":null,"data":[],"items":[],"next_cursor":null},"trace_id":"","retry_after_secs":0,"elapsed_ms":0,"pages":1},"branch":"then","changes":{"":{"before":null,"after":""}},"error":"","started_at":"2026-01-01T00:00:00.000Z","finished_at":"2026-01-01T00:00:00.000Z","duration_ms":0,"retried":true,"by_retry":1}
{"seq":1,"block":"","kind":"condition","phase":"finished","attempt":1,"branch":"else","started_at":"","finished_at":"","duration_ms":0}
{"seq":2,"block":"","kind":"update","phase":"started","attempt":1,"changes":{},"started_at":"","finished_at":"","duration_ms":0}
{"seq":3,"block":"","kind":"end","phase":"finished","attempt":1,"started_at":"","finished_at":"","duration_ms":0}
{"id":"","workflow":"","workflow_hash":"","record_id":"","record_label":"","trigger":"manual","state":"succeeded","current":null,"next_seq":0,"pending":null,"error":null,"created_at":"","updated_at":"","finished_at":"","retries":0,"retry_block":null,"today":"2026-01-01","lease":{"owner":"local-","token":"","until":""},"wake_at":null}
"state":"failed" "state":"cancelled" "trigger":"schedule:" "trigger":"event:" "trigger":"batch:" "kind":"for_each" "kind":"wait" "method":"POST" "method":"PUT" "method":"PATCH" "method":"DELETE" "status":"DISABLED""#;

/// The dictionary prepared once (compression level included): it is digested once, not
/// for every value, and every value is packed with the same parameters.
static ENCODER: LazyLock<zstd::dict::EncoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::EncoderDictionary::copy(DICTIONARY_V1, LEVEL));
static DECODER: LazyLock<zstd::dict::DecoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::DecoderDictionary::copy(DICTIONARY_V1));

thread_local! {
    /// A context and an output buffer per thread, reused for every value.
    static PACKER: RefCell<(zstd::zstd_safe::CCtx<'static>, Vec<u8>)> =
        RefCell::new((zstd::zstd_safe::create_cctx(), Vec::new()));
    static UNPACKER: RefCell<zstd::zstd_safe::DCtx<'static>> = RefCell::new(zstd::zstd_safe::create_dctx());
}

/// The most a packed value may unpack to: far above any journal, and a bound on what a
/// damaged header can make the store allocate.
const MAX_UNPACKED: u64 = 256 * 1024 * 1024;

/// Appends `json`, compressed, to `out`.
fn compress_onto(out: &mut Vec<u8>, json: &[u8]) -> StoreResult<()> {
    PACKER.with(|cell| {
        let (cctx, buffer) = &mut *cell.borrow_mut();
        buffer.clear();
        buffer.reserve(zstd::zstd_safe::compress_bound(json.len()));
        cctx.compress_using_cdict(buffer, json, ENCODER.as_cdict()).map_err(zstd_error)?;
        out.extend_from_slice(buffer);
        Ok(())
    })
}

fn decompress(frame: &[u8]) -> StoreResult<Vec<u8>> {
    // The frame header says how large the content is (zstd writes it there).
    let size = zstd::zstd_safe::get_frame_content_size(frame);
    if size > MAX_UNPACKED {
        return Err(StoreError::corrupt("a packed value does not say how large it is, or says too much"));
    }
    let mut out = Vec::with_capacity(size as usize);
    UNPACKER
        .with(|d| d.borrow_mut().decompress_using_ddict(&mut out, frame, DECODER.as_ddict()))
        .map_err(zstd_error)?;
    Ok(out)
}

fn zstd_error(code: usize) -> StoreError {
    StoreError::corrupt(format!("a packed value cannot be read or written: {}", zstd::zstd_safe::get_error_name(code)))
}

/// `json` packed.
pub fn pack(json: &[u8]) -> StoreResult<Vec<u8>> {
    let mut out = vec![PACKED_V1];
    compress_onto(&mut out, json)?;
    Ok(out)
}

/// The JSON text of a stored value: packed or plain.
pub fn unpack(bytes: &[u8]) -> StoreResult<std::borrow::Cow<'_, [u8]>> {
    match bytes.first() {
        Some(&PACKED_V1) => Ok(decompress(&bytes[1..])?.into()),
        _ => Ok(bytes.into()),
    }
}

/// Journal entries (each as its JSON text, in order) packed into one value.
pub fn pack_journal(entries: &[&[u8]]) -> StoreResult<Vec<u8>> {
    let mut array = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    array.push(b'[');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            array.push(b',');
        }
        array.extend_from_slice(entry);
    }
    array.push(b']');
    let mut out = vec![JOURNAL_V1];
    out.extend((entries.len() as u32).to_le_bytes());
    compress_onto(&mut out, &array)?;
    Ok(out)
}

/// Whether a stored journal value is a packed journal (else it is one entry).
pub fn is_journal(bytes: &[u8]) -> bool {
    bytes.first() == Some(&JOURNAL_V1)
}

/// How many entries a packed journal holds, read from its header.
pub fn journal_len(bytes: &[u8]) -> StoreResult<u32> {
    match bytes.get(1..5) {
        Some(n) if is_journal(bytes) => Ok(u32::from_le_bytes(n.try_into().expect("four bytes"))),
        _ => Err(StoreError::corrupt("a packed journal is too short")),
    }
}

/// The JSON text (an array of entries) of a packed journal.
pub fn unpack_journal(bytes: &[u8]) -> StoreResult<Vec<u8>> {
    journal_len(bytes)?;
    decompress(&bytes[5..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_value_reads_back_and_a_plain_one_passes_through() {
        let json = br#"{"id":"r1","workflow":"offboard","state":"succeeded","today":"2026-12-02"}"#;
        let packed = pack(json).unwrap();
        assert_eq!(packed[0], PACKED_V1);
        assert_eq!(&*unpack(&packed).unwrap(), json);
        assert_eq!(&*unpack(json).unwrap(), json);
    }

    #[test]
    fn a_packed_journal_keeps_its_entries_and_count_and_is_smaller() {
        let a = br#"{"seq":0,"block":"get_user","kind":"api","phase":"finished","attempt":1,"status":200,"started_at":"2026-12-02T15:29:08.212Z","finished_at":"2026-12-02T15:29:08.214Z","duration_ms":2}"#;
        let b = br#"{"seq":1,"block":"done","kind":"end","phase":"finished","attempt":1,"started_at":"2026-12-02T15:29:08.241Z","finished_at":"2026-12-02T15:29:08.241Z","duration_ms":0}"#;
        let packed = pack_journal(&[a, b]).unwrap();
        assert!(is_journal(&packed));
        assert_eq!(journal_len(&packed).unwrap(), 2);
        let array: serde_json::Value = serde_json::from_slice(&unpack_journal(&packed).unwrap()).unwrap();
        assert_eq!(array[1]["block"], "done");
        assert!(packed.len() < (a.len() + b.len()) / 2, "{} bytes", packed.len());
    }

    #[test]
    fn a_damaged_packed_value_is_a_corrupt_error_not_a_panic() {
        let err = unpack(&[PACKED_V1, 1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("packed"), "{err}");
        assert!(journal_len(&[JOURNAL_V1, 1]).is_err());
        assert!(unpack_journal(&[JOURNAL_V1, 1, 0, 0, 0, 9, 9]).is_err());
    }
}
