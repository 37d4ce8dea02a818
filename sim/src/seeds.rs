//! Runs a scenario over many seeds: `SIM_SEED=N` replays one, `SIM_SEEDS=N` runs N, and a
//! scenario's fixed seeds (ones that once failed) always run first.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// After this many failing seeds the rest are skipped: enough to see a pattern.
const MAX_FAILURES: usize = 5;

/// How one scenario is run over seeds.
pub struct SeedPlan<'a> {
    /// The test function's name, for the replay command.
    pub test: &'a str,
    /// Seeds that once failed: regression cases that always run.
    pub fixed: &'a [u64],
    /// How many seeds the default run covers (`SIM_SEEDS` overrides).
    pub default_count: u64,
}

/// Runs `scenario` for each seed of the plan and panics with every failing seed and the command
/// that replays it.
pub fn run_seeds(plan: &SeedPlan<'_>, scenario: impl Fn(u64) -> Result<(), String>) {
    let seeds = seeds_to_run(plan);
    let started = Instant::now();
    let mut failures = Vec::new();
    for &seed in &seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(seed)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&*panic))));
        if let Err(reason) = outcome {
            eprintln!(
                "seed={seed} FAILED: {reason}\n  replay: {}",
                replay_command(plan.test, seed)
            );
            failures.push((seed, reason));
            if failures.len() >= MAX_FAILURES {
                break;
            }
        }
    }
    eprintln!(
        "{}: {} seeds in {:.1}s, {} failed",
        plan.test,
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    if !failures.is_empty() {
        let report: Vec<String> = failures
            .iter()
            .map(|(seed, reason)| {
                format!(
                    "seed={seed}: {reason}\n  replay: {}",
                    replay_command(plan.test, *seed)
                )
            })
            .collect();
        panic!("{} failing seed(s):\n{}", failures.len(), report.join("\n"));
    }
}

/// The one command that replays `seed` of `test`.
pub fn replay_command(test: &str, seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test -p tunnel-sim --test scenarios {test} -- --exact --nocapture"
    )
}

fn seeds_to_run(plan: &SeedPlan<'_>) -> Vec<u64> {
    if let Some(seed) = env_number("SIM_SEED") {
        return vec![seed];
    }
    let count = env_number("SIM_SEEDS").unwrap_or(plan.default_count);
    let first = env_number("SIM_SEED_START").unwrap_or(1);
    let mut seeds = plan.fixed.to_vec();
    seeds.extend((first..first.saturating_add(count)).filter(|s| !plan.fixed.contains(s)));
    seeds
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={text:?} is not a whole number"),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic".to_owned()
    }
}
