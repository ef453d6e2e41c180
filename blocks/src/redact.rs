//! Redaction: the one place that knows every form in which a secret can leave the process.
//!
//! A vendor may echo a credential back (401 bodies often do), a secret may sit in a form
//! body percent-encoded, in JSON with its quotes escaped, or inside a Basic header as
//! base64. [`SecretSet`] matches each secret in all of those forms at once: every character
//! of the secret may appear literally, percent-encoded (any hex case, `+` for a space), or
//! JSON-escaped (`\"`, `\\`, `\/`, `\n`…, `\u00e9`, surrogate pairs), and the escapes may
//! themselves be percent-encoded (a JSON document in a form body). Derived secrets (the
//! base64 of `user:pass`, an OAuth2 access token fetched at run time) are added as secrets
//! of their own.
//!
//! Values are scrubbed as values: every string leaf and key of a JSON tree is scrubbed on
//! its own, so a secret holding `"` or `\` cannot escape by being serialized differently.
//!
//! [`process`] is the set every exit of the program consults (store writes, journal, run
//! errors, sync sessions, CLI output, API answers, log lines); a credential's secrets join it
//! when the credential is opened, and a connector adds the tokens it obtains.

use std::borrow::Cow;
use std::sync::RwLock;

use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::credential::{Auth, Credential};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shorter secrets would redact ordinary words; `credentials add` refuses them.
pub const MIN_SECRET_BYTES: usize = 4;

/// Matching one start position gives up after this many steps (backtracking over `%` and
/// `\` in a secret is bounded whatever the text).
const STEP_BUDGET: u32 = 4096;

/// Secrets to keep out of everything the program writes or prints.
pub struct SecretSet {
    inner: RwLock<Patterns>,
}

struct Patterns {
    /// Each secret as characters, longest first (the longest match wins).
    secrets: Vec<Vec<char>>,
    /// The same secrets as text, in the same order, for the fast path.
    plain: Vec<String>,
    /// Bytes that can start a match of some secret: a cheap filter before matching.
    first: [bool; 256],
    /// Whether some secret could be written as a JSON number (only then are numbers read).
    numeric: bool,
}

static PROCESS: SecretSet = SecretSet::new();

/// The set every output of this process is scrubbed with.
pub fn process() -> &'static SecretSet {
    &PROCESS
}

impl Default for SecretSet {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretSet {
    pub const fn new() -> Self {
        SecretSet {
            inner: RwLock::new(Patterns {
                secrets: Vec::new(),
                plain: Vec::new(),
                first: [false; 256],
                numeric: false,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.read().secrets.is_empty()
    }

    /// Adds one secret (ignored when shorter than [`MIN_SECRET_BYTES`] or already known).
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET_BYTES {
            return;
        }
        let chars: Vec<char> = secret.chars().collect();
        if self.read().secrets.contains(&chars) {
            return;
        }
        let mut p = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if p.secrets.contains(&chars) {
            return;
        }
        let c = chars[0];
        let mut utf8 = [0u8; 4];
        p.first[c.encode_utf8(&mut utf8).as_bytes()[0] as usize] = true;
        for b in [b'%', b'\\'] {
            p.first[b as usize] = true;
        }
        if c == ' ' {
            p.first[b'+' as usize] = true;
        }
        p.numeric |= chars.iter().all(|c| c.is_ascii_digit() || ".eE+-".contains(*c));
        p.secrets.push(chars);
        p.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        p.plain = p.secrets.iter().map(|s| s.iter().collect()).collect();
    }

    /// Adds every secret of a credential and the forms derived from them that a request
    /// carries (the base64 of `user:pass` in a Basic header).
    pub fn add_credential(&self, credential: &Credential) {
        for s in credential.secrets() {
            self.add(s);
        }
        if let Auth::Basic { username, password } = &credential.auth {
            let pair = format!("{username}:{}", password.expose());
            use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
            for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
                self.add(&engine.encode(&pair));
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Patterns> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `text` with every form of every secret replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.read().scrub(text)
    }

    /// Scrubs every string leaf, object key and number of `value` in place; says whether
    /// anything changed.
    pub fn scrub_value(&self, value: &mut Value) -> bool {
        let p = self.read();
        !p.secrets.is_empty() && p.scrub_tree(value)
    }

    /// `thing` with every secret scrubbed from its string fields (through its JSON value, so
    /// nothing is missed), borrowed when there was nothing to scrub. Fails only when a secret
    /// occurs inside one of Roster's own words (a state name), which a redacted copy could no
    /// longer spell.
    pub fn scrub_serde<'a, T: Serialize + DeserializeOwned + Clone>(&self, thing: &'a T) -> Result<Cow<'a, T>, String> {
        if self.is_empty() {
            return Ok(Cow::Borrowed(thing));
        }
        // Most writes hold no secret, and their JSON text says so for the price of one
        // serialisation. serde_json writes each string leaf as itself except `"`, `\` and
        // control characters, which it escapes; the matcher reads JSON escapes as the
        // characters they stand for, so a secret in any leaf shows in the text. The one form
        // it cannot see through is an escape inside a leaf (written out again as `\\`), so
        // any escaped backslash sends the value down the full path.
        let text = serde_json::to_string(thing).map_err(|e| e.to_string())?;
        if !text.contains(r"\\") && matches!(self.scrub(&text), Cow::Borrowed(_)) {
            return Ok(Cow::Borrowed(thing));
        }
        self.scrub_serde_by_value(thing).map(Cow::Owned)
    }

    /// The full path: every leaf and key of `thing`'s JSON value scrubbed on its own.
    fn scrub_serde_by_value<T: Serialize + DeserializeOwned + Clone>(&self, thing: &T) -> Result<T, String> {
        let mut value = serde_json::to_value(thing).map_err(|e| e.to_string())?;
        if !self.scrub_value(&mut value) {
            return Ok(thing.clone());
        }
        serde_json::from_value(value).map_err(|e| {
            format!(
                "a credential's secret occurs inside one of Roster's own words, so the redacted copy is not valid \
                 ({e}); rotate the secret to a longer one"
            )
        })
    }
}

impl Patterns {
    fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.secrets.is_empty() {
            return Cow::Borrowed(text);
        }
        let h = text.as_bytes();
        // Without an escape character only the literal form can occur.
        let literal = !h.iter().any(|b| matches!(b, b'%' | b'\\' | b'+'));
        let mut out = String::new();
        let (mut copied, mut i) = (0, 0);
        while i < h.len() {
            let end = if !self.first[h[i] as usize] {
                None
            } else if literal {
                // Longest first, so the first hit is the longest.
                self.plain.iter().find(|s| h[i..].starts_with(s.as_bytes())).map(|s| i + s.len())
            } else {
                self.secrets.iter().filter_map(|s| match_secret(h, i, s)).max()
            };
            match end {
                Some(end) if text.is_char_boundary(end) => {
                    out.push_str(&text[copied..i]);
                    out.push_str(REDACTED);
                    copied = end;
                    i = end;
                }
                _ => i += 1,
            }
        }
        if copied == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    fn scrub_tree(&self, value: &mut Value) -> bool {
        match value {
            Value::String(s) => match self.scrub(s) {
                Cow::Owned(clean) => {
                    *s = clean;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Number(n) if self.numeric => {
                let text = n.to_string();
                match self.scrub(&text) {
                    Cow::Owned(clean) => {
                        *value = Value::String(clean);
                        true
                    }
                    Cow::Borrowed(_) => false,
                }
            }
            Value::Array(items) => items.iter_mut().fold(false, |changed, v| self.scrub_tree(v) | changed),
            Value::Object(map) => {
                let mut changed = map.values_mut().fold(false, |changed, v| self.scrub_tree(v) | changed);
                if map.keys().any(|k| matches!(self.scrub(k), Cow::Owned(_))) {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        map.insert(self.scrub(&k).into_owned(), v);
                    }
                    changed = true;
                }
                changed
            }
            Value::Number(_) | Value::Null | Value::Bool(_) => false,
        }
    }
}

/// Where a match of `secret` starting at `i` ends, if one starts there.
fn match_secret(h: &[u8], i: usize, secret: &[char]) -> Option<usize> {
    let mut budget = STEP_BUDGET;
    match_chars(h, i, secret, &mut budget)
}

fn match_chars(h: &[u8], i: usize, rest: &[char], budget: &mut u32) -> Option<usize> {
    let Some((&c, rest)) = rest.split_first() else { return Some(i) };
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    let mut ends = Ends::default();
    char_ends(h, i, c, &mut ends);
    ends.buf[..ends.len].iter().find_map(|&end| match_chars(h, end, rest, budget))
}

/// The few places one character's encodings can end (no allocation on the hot path).
#[derive(Default)]
struct Ends {
    buf: [usize; 8],
    len: usize,
}

impl Ends {
    fn push(&mut self, end: usize) {
        if self.len < self.buf.len() && !self.buf[..self.len].contains(&end) {
            self.buf[self.len] = end;
            self.len += 1;
        }
    }
}

/// Every position where one encoding of `c` that starts at `i` ends.
fn char_ends(h: &[u8], i: usize, c: char, out: &mut Ends) {
    let mut utf8 = [0u8; 4];
    bytes_ends(h, i, c.encode_utf8(&mut utf8).as_bytes(), out);
    if i < h.len() && (h[i] == b'\\' || h[i] == b'%') {
        for escape in json_escapes(c) {
            bytes_ends(h, i, escape.as_bytes(), out);
        }
    }
}

/// Where `want` ends when each of its bytes may appear literally or percent-encoded.
fn bytes_ends(h: &[u8], i: usize, want: &[u8], out: &mut Ends) {
    let Some((&b, rest)) = want.split_first() else {
        out.push(i);
        return;
    };
    let Some(&at) = h.get(i) else { return };
    if at == b {
        bytes_ends(h, i + 1, rest, out);
    }
    if at == b'+' && b == b' ' {
        bytes_ends(h, i + 1, rest, out);
    }
    if at == b'%'
        && let (Some(hi), Some(lo)) = (h.get(i + 1).and_then(hex), h.get(i + 2).and_then(hex))
        && hi * 16 + lo == b
    {
        bytes_ends(h, i + 3, rest, out);
    }
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// The ways JSON can escape `c` (besides writing it as it is).
fn json_escapes(c: char) -> Vec<String> {
    let mut out = Vec::new();
    let short = match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        '/' => Some("\\/"),
        '\u{8}' => Some("\\b"),
        '\u{c}' => Some("\\f"),
        '\n' => Some("\\n"),
        '\r' => Some("\\r"),
        '\t' => Some("\\t"),
        _ => None,
    };
    out.extend(short.map(str::to_string));
    let mut units = [0u16; 2];
    let units = c.encode_utf16(&mut units);
    let lower: String = units.iter().map(|u| format!("\\u{u:04x}")).collect();
    out.push(lower.to_uppercase().replace("\\U", "\\u"));
    out.push(lower);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::credential::Secret;

    fn set(secrets: &[&str]) -> SecretSet {
        let s = SecretSet::new();
        for x in secrets {
            s.add(x);
        }
        s
    }

    fn percent(s: &str, set: &'static percent_encoding::AsciiSet) -> String {
        percent_encoding::utf8_percent_encode(s, set).to_string()
    }

    /// Every derived form of a nasty secret, embedded in text, is redacted.
    #[test]
    fn every_derived_form_is_redacted() {
        let secret = "p\"a\\ss w+r/d=%é€😀";
        let s = set(&[secret]);
        let json_escaped = serde_json::to_string(secret).unwrap();
        let json_escaped = &json_escaped[1..json_escaped.len() - 1];
        let ascii_escaped: String = secret
            .chars()
            .map(|c| match c {
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                '/' => "\\/".to_string(),
                c if c.is_ascii() => c.to_string(),
                c => {
                    let mut u = [0u16; 2];
                    c.encode_utf16(&mut u).iter().map(|u| format!("\\u{u:04X}")).collect()
                }
            })
            .collect();
        let upper = percent(secret, percent_encoding::NON_ALPHANUMERIC);
        // The same escapes in lower-case hex (the secret's own letters are lower case already).
        let lower = upper.to_lowercase();
        let form_plus = upper.replace("%20", "+");
        const PARTIAL: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ').add(b'%').add(b'"');
        let partial = percent(secret, PARTIAL);
        let json_in_form = percent(json_escaped, percent_encoding::NON_ALPHANUMERIC);
        for form in [secret, json_escaped, &ascii_escaped, &upper, &lower, &form_plus, &partial, &json_in_form] {
            let text = format!("before {form} after");
            assert_eq!(s.scrub(&text), "before [redacted] after", "form {form:?}");
        }
    }

    #[test]
    fn values_are_scrubbed_leaf_by_leaf_keys_and_numbers_too() {
        let s = set(&["to\"k\\en", "12345678"]);
        let mut v = json!({"message": "bad token to\"k\\en", "to\"k\\en": 1, "n": [12345678, "x"], "ok": true});
        assert!(s.scrub_value(&mut v));
        assert_eq!(
            v,
            json!({"message": "bad token [redacted]", "[redacted]": 1, "n": ["[redacted]", "x"], "ok": true})
        );
        let mut clean = json!({"a": "nothing here"});
        assert!(!s.scrub_value(&mut clean));
    }

    #[test]
    fn basic_credentials_add_the_header_form() {
        let s = SecretSet::new();
        let c = Credential {
            name: "b".into(),
            base_url: String::new(),
            auth: Auth::Basic { username: "ann".into(), password: Secret::new("pa:ss/wörd+") },
        };
        s.add_credential(&c);
        let b64 = base64::engine::general_purpose::STANDARD.encode("ann:pa:ss/wörd+");
        assert_eq!(s.scrub(&format!("Authorization: Basic {b64}")), "Authorization: Basic [redacted]");
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("ann:pa:ss/wörd+");
        assert_eq!(s.scrub(&format!("x{url_safe}x")), "x[redacted]x");
    }

    #[test]
    fn short_secrets_and_plain_text_are_left_alone() {
        let s = set(&["abc"]);
        assert!(s.is_empty());
        let s = set(&["secret-1"]);
        assert!(matches!(s.scrub("a secret-2 % \\ + text"), Cow::Borrowed(_)));
        assert_eq!(s.scrub("secret-1secret-1"), "[redacted][redacted]");
    }

    #[test]
    fn the_longest_secret_wins_and_backtracking_is_bounded() {
        let s = set(&["tokentoken", "token-long-one"]);
        assert_eq!(s.scrub("a token-long-one b"), "a [redacted] b");
        // A secret of escapes against a text of escapes ends in reasonable time.
        let s = set(&["%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%x"]);
        let text = "%25".repeat(2000);
        let started = std::time::Instant::now();
        assert_eq!(s.scrub(&text), text);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn typed_values_round_trip() {
        #[derive(Serialize, serde::Deserialize, Clone, PartialEq, Debug)]
        struct Step {
            state: String,
            error: Option<String>,
        }
        let s = set(&["hunter22"]);
        let step = Step { state: "failed".into(), error: Some("401: hunter22 is wrong".into()) };
        let clean = s.scrub_serde(&step).unwrap();
        assert_eq!(clean.error.as_deref(), Some("401: [redacted] is wrong"));
    }

    /// The quick look at a value's JSON text never misses what scrubbing each leaf finds:
    /// every form a secret may take in a leaf (literal, percent-encoded, JSON-escaped, both),
    /// for secrets with quotes, backslashes, spaces, digits and accents.
    #[test]
    fn the_quick_look_finds_every_form_the_full_scrub_finds() {
        #[derive(Serialize, serde::Deserialize, Clone, PartialEq, Debug)]
        struct Entry {
            error: Option<String>,
            body: Value,
        }
        let secrets = ["hunter22", "pa\"ss word", "back\\slash", "4242424242", "caf\u{e9}-token", "tab\there"];
        for secret in secrets {
            let s = set(&[secret]);
            let percent: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
            let json_escaped = serde_json::to_string(secret).unwrap();
            let json_escaped = &json_escaped[1..json_escaped.len() - 1];
            let unicode_escaped: String = secret.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
            let percent_of_escaped: String = json_escaped.bytes().map(|b| format!("%{b:02x}")).collect();
            let forms = [secret.to_string(), percent, json_escaped.to_string(), unicode_escaped, percent_of_escaped];
            for form in forms {
                let leaves = [
                    Entry { error: Some(format!("401: {form} is wrong")), body: Value::Null },
                    Entry { error: None, body: json!({ "echo": { "nested": [format!("x{form}y")] } }) },
                    Entry { error: None, body: json!({ form.clone(): 1 }) },
                ];
                for entry in leaves {
                    let quick = s.scrub_serde(&entry).unwrap();
                    let full = s.scrub_serde_by_value(&entry).unwrap();
                    assert_eq!(*quick, full, "secret {secret:?} in form {form:?}");
                    assert!(matches!(quick, Cow::Owned(_)), "secret {secret:?} in form {form:?} was not found");
                }
            }
            if let Ok(n) = secret.parse::<u64>() {
                let entry = Entry { error: None, body: json!({ "amount": n }) };
                assert_eq!(*s.scrub_serde(&entry).unwrap(), s.scrub_serde_by_value(&entry).unwrap());
            }
            let clean = Entry { error: Some("nothing to see".into()), body: json!({"a": "\\ and \" and %41"}) };
            assert_eq!(*s.scrub_serde(&clean).unwrap(), clean, "a value without the secret is kept as it is");
        }
    }
}
