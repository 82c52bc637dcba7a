//! `corelog-bench`: the Corelog load generator (issue 4 fills it in).
//!
//! For now it only proves that the harness builds against the broker crate.

fn main() {
    println!(
        "corelog-bench {}: workloads arrive with the bench-harness issue",
        corelog::VERSION
    );
}
