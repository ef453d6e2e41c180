//! `roster`: a thin command line over roster-engine. Parses, calls the engine, prints.

mod cli;

use std::process::ExitCode;

/// glibc's allocator spends a quarter of a run's CPU in malloc and free (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main()
}
