//! The `corelog` binary: every command lives in `corelog::cli`.

fn main() -> std::process::ExitCode {
    corelog::cli::main()
}
