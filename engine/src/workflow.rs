//! Workflow files: parse, compile every block, build the graph, validate it whole.
//!
//! Loading never stops at the first problem: every error is collected with its JSON path
//! and what to do, so one `roster validate` shows the whole list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Dfs;
use roster_blocks::diag::{ConfigError, Diagnostics, Suggester, join};
use roster_blocks::fields::Fields;
use roster_blocks::kinds::{Begin, Block, CompileContext, Edge, Shape};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The name the begin block has in the graph, journals and edges.
pub const BEGIN: &str = "begin";

/// A loaded, validated workflow. Immutable; runs share it.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub description: String,
    pub begin: Begin,
    /// Blocks in file order.
    pub blocks: Vec<(String, Block)>,
    pub graph: DiGraph<String, &'static str>,
    /// SHA-256 of the source text: a run keeps the version it started with.
    pub hash: String,
    pub source: String,
    /// Where it was loaded from, for messages.
    pub file: String,
    /// At most this many runs of the workflow at once (`None`: only the global limit).
    pub concurrency: Option<usize>,
}

impl Workflow {
    pub fn block(&self, id: &str) -> Option<&Block> {
        self.blocks.iter().find(|(k, _)| k == id).map(|(_, b)| b)
    }

    /// Reads and compiles a workflow file.
    pub fn load(path: &Path, cx: &CompileContext) -> Result<Workflow> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| Error::Io(format!("cannot read {file}: {e}")))?;
        Self::compile(&source, &file, cx)
    }

    pub fn compile(source: &str, file: &str, cx: &CompileContext) -> Result<Workflow> {
        compile(source, file, cx).map_err(|errors| Error::Invalid { file: file.to_string(), errors })
    }

    /// Graphviz text of the block graph. Every id and label is a quoted DOT string, so
    /// any text a user writes (quotes, backslashes, newlines) stays inside its label.
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph {} {{\n  rankdir=TB;\n", dot_string(&self.name));
        out.push_str(&format!(
            "  {} [shape=oval, label={}];\n",
            dot_string(BEGIN),
            dot_string(&begin_label(&self.begin))
        ));
        for (id, block) in &self.blocks {
            let shape = match block.shape() {
                Shape::Decision => "diamond",
                Shape::Terminal => "doublecircle",
                Shape::Step => "box",
            };
            let label = format!("{id}\n{}", block.label());
            out.push_str(&format!("  {} [shape={shape}, label={}];\n", dot_string(id), dot_string(&label)));
        }
        for edge in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(edge).expect("edge has endpoints");
            out.push_str(&format!(
                "  {} -> {} [label={}];\n",
                dot_string(&self.graph[a]),
                dot_string(&self.graph[b]),
                dot_string(self.graph[edge])
            ));
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart text of the block graph. Labels are quoted with `"` written as
    /// `#quot;` (and `<`, `>` as `#lt;`, `#gt;`), Mermaid's own escapes, so rule and template
    /// text cannot end a label early.
    pub fn to_mermaid(&self) -> String {
        // Node ids: the block's position plus its name made safe, so `end` (a Mermaid
        // keyword) and names that differ only in punctuation cannot clash.
        let position: BTreeMap<&str, usize> =
            self.blocks.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
        let id = |s: &str| {
            let safe = s.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
            match position.get(s) {
                Some(i) => format!("b{i}_{safe}"),
                None => safe,
            }
        };
        let text = |s: &str| s.replace('"', "#quot;").replace('<', "#lt;").replace('>', "#gt;").replace('\n', "<br/>");
        let mut out = String::from("flowchart TD\n");
        out.push_str(&format!("  {}([\"{}\"])\n", id(BEGIN), text(&begin_label(&self.begin))));
        for (name, block) in &self.blocks {
            let label = text(&format!("{name}\n{}", block.label()));
            let node = match block.shape() {
                Shape::Decision => format!("{{\"{label}\"}}"),
                Shape::Terminal => format!("((\"{label}\"))"),
                Shape::Step => format!("[\"{label}\"]"),
            };
            out.push_str(&format!("  {}{node}\n", id(name)));
        }
        for edge in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(edge).expect("edge has endpoints");
            out.push_str(&format!("  {} -->|{}| {}\n", id(&self.graph[a]), self.graph[edge], id(&self.graph[b])));
        }
        out
    }
}

/// `s` as a DOT quoted string: `"` and `\` escaped, line breaks as DOT's `\n`.
fn dot_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The begin block as a reader needs it: its trigger, and its rules when it has any.
fn begin_label(begin: &Begin) -> String {
    match &begin.rules {
        Some(rules) => format!("begin: {}\nrules: {rules}", trigger_label(begin)),
        None => format!("begin: {}", trigger_label(begin)),
    }
}

fn trigger_label(begin: &Begin) -> String {
    use roster_blocks::kinds::Trigger;
    match &begin.trigger {
        Trigger::Manual => "by hand".into(),
        Trigger::Created => "on record created".into(),
        Trigger::Updated { fields } if fields.is_empty() => "on record updated".into(),
        Trigger::Updated { fields } => format!("on {} updated", fields.join(", ")),
        Trigger::Schedule(s) => {
            format!("cron {}{}", s.cron, s.timezone.as_ref().map(|t| format!(" {t}")).unwrap_or_default())
        }
    }
}

const TOP_KEYS: &[&str] = &["name", "description", "object_type", "begin", "blocks", "version", "concurrency"];

fn compile(source: &str, file: &str, cx: &CompileContext) -> std::result::Result<Workflow, Vec<ConfigError>> {
    let value: Value = serde_json::from_str(source).map_err(|e| vec![roster_blocks::diag::json_syntax(&e)])?;
    let mut diags = Diagnostics::new();
    let Some(top) = Fields::open(&value, "", "a workflow", TOP_KEYS, &mut diags) else {
        return Err(diags.into_errors());
    };
    let name = top.string("name", &mut diags).unwrap_or_default().to_string();
    if top.get("name").is_some_and(Value::is_string) && !is_workflow_name(&name) {
        diags.push(
            ConfigError::new(
                "name",
                format!(
                    "workflow name `{name}` must start with a letter or digit and hold only letters, digits, `-`, `_`, `.`"
                ),
            )
            .with_help("use a short slug such as \"deactivate-leavers\""),
        );
    }
    let description = top.opt_string("description", &mut diags).unwrap_or_default().to_string();
    let concurrency = match top.get("concurrency") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n as usize),
            _ => {
                diags.error("concurrency", "concurrency must be a whole number of runs, at least 1");
                None
            }
        },
    };
    if let Some(t) = top.opt_string("object_type", &mut diags)
        && t != "user"
    {
        diags.push(
            ConfigError::new("object_type", format!("unknown object type `{t}`"))
                .with_help("workflows run over `user` records"),
        );
    }
    let begin = match top.get("begin") {
        Some(b) => Begin::compile(b, BEGIN, &mut diags),
        None => {
            diags.push(
                ConfigError::new(BEGIN, "missing the `begin` block")
                    .with_help("add \"begin\": {\"trigger\": {\"manual\": true}, \"next\": \"<first block>\"}"),
            );
            None
        }
    };
    let mut blocks = Vec::new();
    // Edges of the blocks that did not compile, read leniently from their JSON.
    let mut raw_edges: Vec<(String, Edge)> = Vec::new();
    match top.opt_object("blocks", &mut diags) {
        Some(map) => {
            for (id, v) in map {
                let at = join("blocks", id);
                if id == BEGIN {
                    diags.push(
                        ConfigError::new(&at, "`begin` is reserved for the begin block")
                            .with_help("put the begin block at the top level as `begin` and rename this block"),
                    );
                    continue;
                }
                if id.trim().is_empty() || id.chars().all(|c| c == '.') || id.chars().any(char::is_control) {
                    diags.push(
                        ConfigError::new(&at, format!("`{id}` cannot name a block"))
                            .with_help("name blocks with words, e.g. \"get_user\" or \"deactivate\""),
                    );
                }
                match Block::compile(v, &at, cx, &mut diags) {
                    Some(block) => blocks.push((id.clone(), block)),
                    None => raw_edges.extend(roster_blocks::kinds::raw_edges(v).into_iter().map(|e| (id.clone(), e))),
                }
            }
            if map.is_empty() {
                diags.error("blocks", "a workflow needs at least one block");
            }
        }
        None => diags.error("blocks", "missing `blocks` (the named blocks the workflow runs)"),
    }
    let all_ids: BTreeSet<&str> = value
        .get("blocks")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).filter(|id| *id != BEGIN).collect())
        .unwrap_or_default();

    // Edges: every target must name a block (even one that failed to compile).
    let begin_next = match &begin {
        Some(b) => Some(b.next.clone()),
        None => value.pointer("/begin/next").and_then(Value::as_str).map(str::to_string),
    };
    let mut edges: Vec<(String, Edge, String)> = Vec::new();
    if let Some(next) = &begin_next {
        edges.push((BEGIN.into(), Edge { label: "next", target: next.clone() }, join(BEGIN, "next")));
    }
    for (id, e) in blocks
        .iter()
        .flat_map(|(id, block)| block.edges().into_iter().map(move |e| (id, e)))
        .chain(raw_edges.iter().map(|(id, e)| (id, e.clone())))
    {
        let at = join(&join("blocks", id), e.label);
        edges.push((id.clone(), e, at));
    }
    let mut names = Suggester::new(all_ids.iter().copied());
    // A dangling edge whose target is a likely typo counts as leading to the block it
    // was meant for, so that block is not also reported as unreachable.
    let mut meant: Vec<(String, String)> = Vec::new();
    for (from, e, at) in &edges {
        if !all_ids.contains(e.target.as_str()) {
            let guess = if e.target == BEGIN { None } else { names.closest(&e.target) };
            let help = match guess {
                _ if e.target == BEGIN => "an edge cannot lead back to begin".to_string(),
                Some(k) => format!("did you mean `{k}`?"),
                None => names.suggest(&e.target),
            };
            if let Some(k) = guess {
                meant.push((from.clone(), k.to_string()));
            }
            diags.push(ConfigError::new(at, format!("no block named `{}`", e.target)).with_help(help));
        }
    }

    // The graph over every block, compiled or not.
    let mut graph: DiGraph<String, &'static str> = DiGraph::new();
    let mut nodes: BTreeMap<String, NodeIndex> = BTreeMap::new();
    nodes.insert(BEGIN.into(), graph.add_node(BEGIN.into()));
    for id in &all_ids {
        nodes.insert(id.to_string(), graph.add_node(id.to_string()));
    }
    for (from, e, _) in &edges {
        if let (Some(a), Some(b)) = (nodes.get(from), nodes.get(&e.target)) {
            graph.add_edge(*a, *b, e.label);
        }
    }
    check_cycles(&graph, &mut diags);
    if begin_next.is_some() {
        let mut reach = graph.clone();
        for (from, to) in &meant {
            if let (Some(a), Some(b)) = (nodes.get(from), nodes.get(to)) {
                reach.add_edge(*a, *b, "meant");
            }
        }
        let mut reached = BTreeSet::new();
        let mut dfs = Dfs::new(&reach, nodes[BEGIN]);
        while let Some(n) = dfs.next(&reach) {
            reached.insert(reach[n].clone());
        }
        let unreached: Vec<&str> = all_ids.iter().copied().filter(|id| !reached.contains(*id)).collect();
        let help = "point a `next`, `then`, `else` or `on_error` at it, or remove it";
        if unreached.len() <= 10 {
            for id in unreached {
                diags.push(
                    ConfigError::new(join("blocks", id), format!("block `{id}` is never reached from begin"))
                        .with_help(help),
                );
            }
        } else {
            // Many at once (edges broken wholesale): one line instead of a flood.
            let first: Vec<&str> = unreached.iter().copied().take(20).collect();
            let more = unreached.len() - first.len();
            let list = if more > 0 { format!("{} and {more} more", first.join(", ")) } else { first.join(", ") };
            diags.push(
                ConfigError::new("blocks", format!("{} blocks are never reached from begin: {list}", unreached.len()))
                    .with_help(help),
            );
        }
    }
    check_step_references(begin.as_ref(), &blocks, &all_ids, &mut diags);

    if !diags.is_empty() {
        return Err(diags.into_errors());
    }
    let hash = hex::encode(Sha256::digest(source.as_bytes()));
    Ok(Workflow {
        name,
        description,
        begin: begin.expect("no errors means begin compiled"),
        blocks,
        graph,
        hash,
        source: source.to_string(),
        file: file.to_string(),
        concurrency,
    })
}

/// A workflow name a file, a URL and a shell can all carry: not empty, not `.` or `..`.
fn is_workflow_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Reports every cycle with the whole loop named, e.g. `a → b → c → a`.
fn check_cycles(graph: &DiGraph<String, &'static str>, diags: &mut Diagnostics) {
    for scc in tarjan_scc(graph) {
        let looped = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
        if !looped {
            continue;
        }
        let mut names: Vec<String> = scc.iter().map(|n| graph[*n].clone()).collect();
        names.reverse();
        // Walk the cycle in edge order from its first block so the message reads as a path.
        let start = scc[scc.len() - 1];
        let mut path = vec![graph[start].clone()];
        let mut at = start;
        for _ in 0..scc.len() {
            let Some(next) = graph.neighbors(at).find(|n| scc.contains(n)) else { break };
            path.push(graph[next].clone());
            if next == start {
                break;
            }
            at = next;
        }
        let mut text = if path.len() > 1 { path.join(" → ") } else { names.join(" → ") };
        if path.len() > 21 {
            // A loop through thousands of blocks: its start and its size say enough.
            text = format!("{} → … → {} ({} blocks)", path[..20].join(" → "), path[0], path.len() - 1);
        }
        diags.push(
            ConfigError::new(join("blocks", &graph[start]), format!("the blocks form a cycle: {text}"))
                .with_help("workflows run each block at most once; break the loop by pointing one edge elsewhere"),
        );
    }
}

/// `steps.X` in a template or rule must name a block of this workflow.
fn check_step_references(
    begin: Option<&Begin>,
    blocks: &[(String, Block)],
    ids: &BTreeSet<&str>,
    diags: &mut Diagnostics,
) {
    let mut names = Suggester::new(ids.iter().copied());
    let mut check = |at: String, vars: Vec<roster_blocks::path::Path>| {
        for v in vars {
            if v.root() != "steps" {
                continue;
            }
            match v.segments().get(1) {
                Some(roster_blocks::path::Segment::Key(step)) if !ids.contains(step.as_str()) => {
                    diags.push(
                        ConfigError::new(&at, format!("`{v}` names no block `{step}`")).with_help(names.suggest(step)),
                    );
                }
                _ => {}
            }
        }
    };
    if let Some(b) = begin
        && let Some(r) = &b.rules
    {
        check(join(BEGIN, "rules"), r.variables());
    }
    for (id, block) in blocks {
        check(join("blocks", id), block.variables());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped workflow, mangled at random: loading gives a workflow or errors,
    /// never a panic.
    #[test]
    fn mangled_workflow_files_never_panic_the_loader() {
        const PIECES: &[&str] = &[
            "{{",
            "}}",
            "<<",
            ">>",
            "\"",
            "\\",
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "null",
            "0",
            "-1",
            "1e400",
            "é",
            "名",
            "😀",
            "\u{301}",
            "#if ",
            "/if",
            "(",
            ")",
            "\"next\"",
            "\"type\"",
            "\"begin\"",
            "\"api\"",
            "..",
            "",
        ];
        let presets = crate::presets::built_in();
        let cx = CompileContext { presets: &presets, credentials: None };
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let mut files = Vec::new();
        for dir in [root.to_string(), format!("{root}/brex")] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    files.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        for source in &files {
            for _ in 0..500 {
                let mut text = source.clone();
                for _ in 0..1 + next() % 3 {
                    let at = text.floor_char_boundary(next() % text.len());
                    let end = text.floor_char_boundary((at + next() % 8).min(text.len()));
                    text.replace_range(at..end, PIECES[next() % PIECES.len()]);
                }
                let outcome = std::panic::catch_unwind(|| Workflow::compile(&text, "mangled.json", &cx).map(|_| ()));
                assert!(outcome.is_ok(), "the loader panicked on:\n{text}");
            }
        }
    }
}
