//! The preset catalog: built-in preset files embedded at build time, plus overrides and
//! additions from a folder (`--presets DIR` or the home's `presets/`).

use std::path::Path;

use include_dir::{Dir, include_dir};
use roster_blocks::preset::{Preset, PresetCatalog};

use crate::error::{Error, Result};

static BUILT_IN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../presets");

/// The built-in presets. A broken built-in preset is a bug caught by the tests.
pub fn built_in() -> PresetCatalog {
    let mut catalog = PresetCatalog::new();
    let mut files = Vec::new();
    collect(&BUILT_IN, &mut files);
    for file in files {
        let text = file.contents_utf8().unwrap_or_default();
        let origin = format!("built-in presets/{}", file.path().display());
        match Preset::parse(text, &origin) {
            Ok(p) => catalog.insert(p),
            Err(errors) => {
                for e in errors {
                    tracing::error!("{origin}: {e}");
                }
            }
        }
    }
    catalog
}

fn collect<'a>(dir: &'a Dir<'a>, out: &mut Vec<&'a include_dir::File<'a>>) {
    for f in dir.files() {
        if f.path().extension().is_some_and(|e| e == "json") {
            out.push(f);
        }
    }
    for d in dir.dirs() {
        collect(d, out);
    }
}

/// The built-in presets overlaid with every `*.json` below `dir` (same name replaces).
pub fn with_folder(dir: Option<&Path>) -> Result<PresetCatalog> {
    let mut catalog = built_in();
    let Some(dir) = dir else { return Ok(catalog) };
    if !dir.exists() {
        return Ok(catalog);
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths)?;
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let origin = path.display().to_string();
        let preset = Preset::parse(&text, &origin).map_err(|errors| Error::Invalid { file: origin.clone(), errors })?;
        catalog.insert(preset);
    }
    Ok(catalog)
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}
