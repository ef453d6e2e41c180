//! `roster`: a thin command line over roster-engine. Parses, calls the engine, prints.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
