//! `ruvector-chart COLLECTION --conninfo 'host=... dbname=...' --out PATH`:
//! draws λ_norm over time for COLLECTION to PATH.svg and PATH.png.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: ruvector-chart COLLECTION --conninfo 'host=127.0.0.1 port=5432 user=... dbname=...' --out PATH
Draws λ_norm over time for COLLECTION, with its thresholds, state and state changes,
to PATH.svg and PATH.png. Needs the privileges of ruvector_reader.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut collection, mut conninfo, mut out) = (None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--conninfo" => conninfo = args.next(),
            "--out" => out = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if collection.is_none() && !arg.starts_with('-') => collection = Some(arg),
            _ => {
                eprintln!("unexpected argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(collection), Some(conninfo), Some(out)) = (collection, conninfo, out) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let run = || -> ruvector_chart::Result<(PathBuf, PathBuf)> {
        let mut client = postgres::Client::connect(&conninfo, postgres::NoTls)?;
        let series = ruvector_chart::read(&mut client, &collection)?;
        ruvector_chart::render(&series, &out)
    };
    match run() {
        Ok((svg, png)) => {
            println!("{}\n{}", svg.display(), png.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ruvector-chart: {e}");
            ExitCode::FAILURE
        }
    }
}
