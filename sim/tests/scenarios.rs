//! The simulations of issue 7. `cargo test -p tunnel-sim` runs a fast set of seeds per
//! scenario; `SIM_SEEDS=N` runs N, `SIM_SEED=N` replays one (a failure prints the command).
//! `fixed` seeds once failed and always run.

use tunnel_sim::scenarios;
use tunnel_sim::seeds::{run_seeds, SeedPlan};

#[test]
fn routing_never_crosses() {
    run_seeds(
        &SeedPlan {
            test: "routing_never_crosses",
            fixed: &[],
            default_count: 24,
        },
        scenarios::s1_routing::run,
    );
}

#[test]
fn crashed_client_is_contained() {
    run_seeds(
        &SeedPlan {
            test: "crashed_client_is_contained",
            fixed: &[12],
            default_count: 24,
        },
        scenarios::s2_crash::run,
    );
}

#[test]
fn long_partition_then_reconnect() {
    run_seeds(
        &SeedPlan {
            test: "long_partition_then_reconnect",
            fixed: &[],
            default_count: 24,
        },
        scenarios::s3_long_partition::run,
    );
}

#[test]
fn short_outage_loses_nothing() {
    run_seeds(
        &SeedPlan {
            test: "short_outage_loses_nothing",
            fixed: &[13],
            default_count: 24,
        },
        scenarios::s4_short_outage::run,
    );
}

#[test]
fn cut_uploads_and_refusals_spare_the_connection() {
    run_seeds(
        &SeedPlan {
            test: "cut_uploads_and_refusals_spare_the_connection",
            fixed: &[7, 16],
            default_count: 24,
        },
        scenarios::s5_cut_upload::run,
    );
}

// Seeds 1, 2 (a silently lost old connection leaks two gateway tasks: see sim/README.md).
#[test]
fn takeover_by_the_same_key() {
    run_seeds(
        &SeedPlan {
            test: "takeover_by_the_same_key",
            fixed: &[1, 2],
            default_count: 24,
        },
        scenarios::s6_takeover::run,
    );
}

// Seeds 1 and 2 failed before the gateway drained channels at once: a neighbour on the same SSH
// connection waited for the slow visitor (1), the download stalled for good (2).
#[test]
fn slow_visitor_spares_its_neighbours() {
    run_seeds(
        &SeedPlan {
            test: "slow_visitor_spares_its_neighbours",
            fixed: &[1, 2],
            default_count: 8,
        },
        scenarios::s7_slow_visitor::run,
    );
}

#[test]
fn slow_visitor_past_its_spill_cap_is_cut_alone() {
    run_seeds(
        &SeedPlan {
            test: "slow_visitor_past_its_spill_cap_is_cut_alone",
            fixed: &[],
            default_count: 8,
        },
        scenarios::s8_spill_cap::run,
    );
}
