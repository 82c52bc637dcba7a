//! The `corelog` command line.
//! TODO(helper: protocol+client).

pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
