//! `tunnel-sim`: deterministic network simulations of the tunnel runtime on turmoil.
//!
//! The gateway host runs the very server the binary runs ([`tunnel_runtime::server::start`])
//! over [`net::SimNet`]; client hosts are russh clients that publish small services; visitor
//! hosts make HTTP and TCP requests. One seed drives turmoil, the core's RNG and every random
//! choice of a scenario, so a failing seed replays exactly:
//!
//! ```text
//! cargo test -p tunnel-sim                                   # the fast set
//! SIM_SEED=42 cargo test -p tunnel-sim --test scenarios NAME -- --exact --nocapture
//! SIM_SEEDS=10000 cargo test -p tunnel-sim --release         # the long run
//! ```

pub mod client;
pub mod http_head;
pub mod net;
pub mod scenarios;
pub mod seeds;
pub mod service;
pub mod visitor;
pub mod world;
