//! Scenario 8: a slow visitor asks for a download far larger than its spill cap (64 KiB in
//! memory, 1 MiB on disk) and is cut. Its connection ends before the full length (EOF, or the RST
//! that answers its next write when turmoil loses the FIN: `slow::QUIET`), what it read is an
//! intact prefix, and by then its spill file is gone (nothing waits on disk). Neighbours on the
//! same SSH connection (a tcp echo) and on another one (an http POST) are served by their owners
//! within the time bound derived from the simulated latencies, before, during and after the cut;
//! both clients keep their one connection; what waited on disk, sampled after every step, never
//! passed the cap (from an empty file to the cut can fit in one step, so the sample may be 0);
//! and at the end nothing is left, spill buffers included.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tunnel_core::SpillLimits;

use super::slow::{exchange_bound, neighbour, read_slowly, SlowRead, SlowState};
use super::{
    random_label, stop_and_check, visitors_finished, wait_live, wait_targets, SharedBoard,
};
use crate::client::{add_client, ClientSpec, Kind, Shared};
use crate::visitor::TcpVisitor;
use crate::world::{
    add_gateway, builder_with_latency, run_sampling, scenario_rng, GatewaySettings, StateDir,
};

const MEMORY_CAP: u64 = 64 * 1024;
const FILE_CAP: u64 = 1024 * 1024;

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    // The server-wide cap stays at its default: this is the per-visitor one.
    let settings = GatewaySettings {
        spill: SpillLimits::new(MEMORY_CAP, FILE_CAP, SpillLimits::default().file_total()),
        ..GatewaySettings::default()
    };
    // Few segments in flight to the visitor, so what the links hold is small beside the cap and
    // the visitor meets the cut within seconds; at least 4, or a visitor's FIN can be lost (see
    // `slow::QUIET`) even by an eager reader.
    let capacity = rng.gen_range(4..=8usize);
    let (mut builder, max_latency) = builder_with_latency(seed, &mut rng, Duration::from_secs(600));
    let mut sim = builder.tcp_capacity(capacity).build();
    let length = rng.gen_range(3 * FILE_CAP..=6 * FILE_CAP);
    let bound = exchange_bound(max_latency);

    let state = StateDir::new();
    let probe = add_gateway(&mut sim, seed, &settings, 2, &state);
    let same = add_client(&mut sim, ClientSpec::tcp(seed, 0, 1));
    let other_spec = ClientSpec::http(seed, 1, vec![Some(random_label(&mut rng))]);
    let other = add_client(&mut sim, other_spec);
    let clients = vec![
        (same.clone(), "client-0".to_owned(), Kind::Tcp),
        (other.clone(), "client-1".to_owned(), Kind::Http),
    ];

    let sampled = probe.clone();
    let board = SharedBoard::default();
    let slow_board = board.clone();
    let slow_probe = probe.clone();
    let mut vrng = ChaCha20Rng::seed_from_u64(rng.gen());
    sim.client("slow-visitor", async move {
        let board = slow_board;
        let targets = wait_targets(&board).await?;
        let mut visitor = TcpVisitor::connect(targets[0].port()).await?;
        let owner = visitor.read_line().await?;
        if owner.as_deref() != Some("owner=client-0") {
            return Err(format!("slow visitor met {owner:?}").into());
        }
        board.lock().unwrap().slow = SlowState::Reading;
        let read = read_slowly(
            &mut visitor,
            1,
            length,
            &mut vrng,
            1024..16 * 1024,
            20..120,
            |_| {},
        )
        .await;
        // The cut released the visitor's file before its connection was closed.
        let on_disk = slow_probe.counts().map_or(0, |c| c.spilled_on_disk);
        let mut b = board.lock().unwrap();
        b.slow = SlowState::Done;
        match read {
            Ok(SlowRead::Ended { received, how }) => {
                if std::env::var_os("SIM_VERBOSE").is_some() {
                    eprintln!("seed={seed} slow visitor cut after {received} of {length}: {how}");
                }
                if on_disk != 0 {
                    b.failures.push(format!(
                        "slow visitor cut, but {on_disk} bytes still wait on disk"
                    ));
                }
            }
            Ok(SlowRead::Complete { .. }) => b.failures.push(format!(
                "slow visitor: all {length} bytes arrived, past a cap of {MEMORY_CAP} in memory \
                 and {FILE_CAP} on disk"
            )),
            Err(e) => b.failures.push(format!("slow visitor: {e}")),
        }
        b.visitors_done += 1;
        Ok(())
    });

    // One neighbour on the slow visitor's connection, one on the other client's.
    for (n, index) in [0usize, 1].into_iter().enumerate() {
        let board = board.clone();
        let mut nrng = ChaCha20Rng::seed_from_u64(rng.gen());
        sim.client(format!("neighbour-{n}"), async move {
            let targets = wait_targets(&board).await?;
            let first_id = 100 + 1000 * n as u64;
            let target = targets[index].clone();
            neighbour(board, &mut nrng, target, first_id, bound, 1000, 3).await?;
            Ok(())
        });
    }

    sim.client("conductor", async move {
        let targets = wait_live(&clients, Duration::from_secs(30)).await?;
        board.lock().unwrap().targets = Some(targets);
        visitors_finished(&board, 3, Duration::from_secs(500)).await?;
        let figures = board.lock().unwrap().neighbours;
        let peak = probe.peak_on_disk();
        if std::env::var_os("SIM_VERBOSE").is_some() {
            eprintln!(
                "seed={seed} max_latency={max_latency:?} slowest_neighbour={:?} bound={bound:?} \
                 exchanges={} during_slow={} peak_on_disk={peak} file_cap={FILE_CAP} \
                 length={length}",
                figures.slowest, figures.exchanges, figures.during_slow
            );
        }
        if figures.during_slow == 0 {
            return Err("no neighbour exchange while the slow visitor read".into());
        }
        if peak > FILE_CAP {
            return Err(format!(
                "{peak} bytes waited on disk for the slow visitor, above its cap of {FILE_CAP}"
            )
            .into());
        }
        for (c, owner, _) in &clients {
            let s = c.lock().unwrap();
            if s.sessions != 1 || s.endings.iter().any(|e| !e.starts_with("connect")) {
                return Err(format!(
                    "{owner}'s connection did not last: sessions {} endings {:?}",
                    s.sessions, s.endings
                )
                .into());
            }
        }
        let shared: Vec<Shared> = vec![same.clone(), other.clone()];
        stop_and_check(&probe, &settings, &shared).await?;
        Ok(())
    });
    run_sampling(&mut sim, &sampled)
}
