//! A short run of each fuzz target (fuzz/entry.rs) on every `cargo test`: seeded inputs
//! (the shipped examples, templates and import files) and deterministic mutations of them.
//! The long runs are `cargo fuzz run TARGET` (see fuzz/Cargo.toml); this keeps the suite
//! honest between them. A panic fails the test with the input that caused it.

#[path = "../fuzz/entry.rs"]
mod entry;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Mutations per seed; small enough for a debug build, large enough to reach odd corners.
const ROUNDS: usize = 300;

/// Fragments that mean something to one of the parsers.
const TOKENS: &[&str] = &[
    "{{",
    "}}",
    "<<",
    ">>",
    "{{#if x}}",
    "{{/if}}",
    "{{#each list}}",
    "{{/each}}",
    "{{else}}",
    "(",
    ")",
    "[",
    "]",
    "['",
    "']",
    "\"",
    "\\",
    "é",
    "名",
    "🙂",
    "\u{301}",
    ".",
    "..",
    "~",
    "@index",
    "../",
    ",",
    "\n",
    "\r\n",
    "{",
    "}",
    ":",
    "null",
    "1e999",
    "123456789012345678901234567890",
    "\u{feff}",
    "\"next\": \"",
    "\"type\": \"api\"",
    "\"op\": \"",
    "\"cron\": \"",
    "0 25 * * *",
    "{{default",
    "{{len",
    "{{lookup user 'x'}}",
    "\u{0}",
];

/// xorshift64*: deterministic, so a failure reproduces with the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(5) {
            0 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            1 if !data.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            2 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            3 => {
                // Repeat a slice: deep nesting and long inputs.
                let end = (at + rng.below(32)).min(data.len());
                let piece = data[at.min(end)..end].to_vec();
                for _ in 0..rng.below(50) {
                    data.splice(at..at, piece.iter().copied());
                }
            }
            _ => data.truncate(at),
        }
    }
    data
}

fn run(target: &str, seeds: &[Vec<u8>], f: fn(&[u8])) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut inputs = 0;
    for seed in seeds {
        for round in 0..=ROUNDS {
            let input = if round == 0 { seed.clone() } else { mutate(seed, &mut rng) };
            inputs += 1;
            if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
                panic!("fuzz target `{target}` panicked on input {:?}", String::from_utf8_lossy(&input));
            }
        }
    }
    eprintln!("{target}: {inputs} inputs, no panic");
}

fn files_under(dir: &Path, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            files_under(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push(bytes);
        }
    }
}

fn seeds(dirs: &[&str]) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for d in dirs {
        files_under(&root.join(d), &mut out);
    }
    assert!(!out.is_empty(), "no seed files under {dirs:?}");
    out
}

#[test]
fn workflow_loader_never_panics() {
    run("workflow_load", &seeds(&["examples"]), entry::workflow_load);
}

#[test]
fn template_compiler_and_renderer_never_panic() {
    run("template", &seeds(&["fuzz/seeds/template"]), entry::template);
}

#[test]
fn importers_never_panic() {
    run("import", &seeds(&["fuzz/seeds/import"]), entry::import);
}
