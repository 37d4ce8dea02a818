//! Scenario 7: a slow visitor reads a fast download while neighbours on the same SSH connection
//! come and go. The gateway drains every channel at once into its visitor's spill buffer (memory,
//! then an unlinked file), so one slow reader holds up no one: the download arrives intact and
//! in order; every neighbour exchange is answered by the owner within a bound derived from the
//! simulated latencies ([`exchange_bound`]); what waits on disk for the slow visitor, sampled
//! through the run, stays within its cap (what waits in memory is bounded by its cap by
//! construction: past it the buffer goes to disk) and something did wait there, or the run
//! tested nothing; the client keeps its one connection; and at the end no spill buffer and no
//! byte on disk is left, beside the usual leak checks.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tunnel_core::SpillLimits;

use super::slow::{exchange_bound, neighbour, read_slowly, SlowRead, SlowState};
use super::{stop_and_check, visitors_finished, wait_live, wait_targets, SharedBoard};
use crate::client::{add_client, ClientSpec, Kind, Shared};
use crate::visitor::TcpVisitor;
use crate::world::{
    add_gateway, builder_with_latency, run_sampling, scenario_rng, GatewaySettings, StateDir,
};

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    let mut settings = GatewaySettings::default();
    let window = u64::from(settings.channel_window);
    // Few segments in flight, so the download waits in the spill rather than in the links; at
    // least 4, or a visitor's FIN can be lost (see `slow::QUIET`) even by an eager reader.
    let capacity = rng.gen_range(4..=8usize);
    let (mut builder, max_latency) = builder_with_latency(seed, &mut rng, Duration::from_secs(600));
    let mut sim = builder.tcp_capacity(capacity).build();
    // Several windows, so the client is held back by nothing but the drain.
    let length = 2 * window + rng.gen_range(0..window);
    // The whole download fits the per-visitor cap (scenario 8 is the one that passes it).
    let memory_cap = 1024 * [64, 128, 256][rng.gen_range(0..3)];
    let file_cap = rng.gen_range(length..=2 * length);
    settings.spill = SpillLimits::new(memory_cap, file_cap, 2 * file_cap);
    let bound = exchange_bound(max_latency);

    let state = StateDir::new();
    let probe = add_gateway(&mut sim, seed, &settings, 1, &state);
    let client = add_client(&mut sim, ClientSpec::tcp(seed, 0, 1));
    let clients = vec![(client.clone(), "client-0".to_owned(), Kind::Tcp)];

    let sampled = probe.clone();
    let board = SharedBoard::default();
    let slow_board = board.clone();
    let slow_client = client.clone();
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
        // How far the visitor had read when the client had written everything: the drain lets
        // the client finish long before the visitor does.
        let mut read_when_written = None;
        let read = read_slowly(
            &mut visitor,
            1,
            length,
            &mut vrng,
            4096..32 * 1024,
            20..80,
            |received| {
                let s = slow_client.lock().unwrap();
                if read_when_written.is_none() && s.download_written.get(&1) == Some(&length) {
                    read_when_written = Some(received);
                }
            },
        )
        .await;
        let mut b = board.lock().unwrap();
        b.slow = SlowState::Done;
        match read {
            Ok(SlowRead::Complete { eof_seen }) => {
                if std::env::var_os("SIM_VERBOSE").is_some() {
                    eprintln!("seed={seed} slow visitor complete, EOF seen: {eof_seen}");
                }
            }
            Ok(SlowRead::Ended { received, how }) => b.failures.push(format!(
                "slow visitor: download ended at {received} of {length} ({how}), within its caps"
            )),
            Err(e) => b.failures.push(format!("slow visitor: {e}")),
        }
        if std::env::var_os("SIM_VERBOSE").is_some() {
            eprintln!("seed={seed} slow visitor had read {read_when_written:?} of {length} when the client had written all");
        }
        b.visitors_done += 1;
        Ok(())
    });

    let neighbours = rng.gen_range(1..=2usize);
    for n in 0..neighbours {
        let board = board.clone();
        let mut nrng = ChaCha20Rng::seed_from_u64(rng.gen());
        sim.client(format!("neighbour-{n}"), async move {
            let targets = wait_targets(&board).await?;
            let first_id = 100 + 1000 * n as u64;
            neighbour(
                board,
                &mut nrng,
                targets[0].clone(),
                first_id,
                bound,
                1000,
                2,
            )
            .await?;
            Ok(())
        });
    }

    sim.client("conductor", async move {
        let targets = wait_live(&clients, Duration::from_secs(30)).await?;
        board.lock().unwrap().targets = Some(targets);
        visitors_finished(&board, 1 + neighbours, Duration::from_secs(500)).await?;
        let figures = board.lock().unwrap().neighbours;
        let peak = probe.peak_on_disk();
        if std::env::var_os("SIM_VERBOSE").is_some() {
            eprintln!(
                "seed={seed} max_latency={max_latency:?} slowest_neighbour={:?} bound={bound:?} \
                 exchanges={} during_slow={} peak_on_disk={peak} file_cap={file_cap} \
                 memory_cap={memory_cap} length={length}",
                figures.slowest, figures.exchanges, figures.during_slow
            );
        }
        if figures.during_slow == 0 {
            return Err("no neighbour exchange while the slow visitor read".into());
        }
        if peak > file_cap {
            return Err(format!(
                "{peak} bytes waited on disk for the slow visitor, above its cap of {file_cap}"
            )
            .into());
        }
        if peak == 0 {
            return Err("nothing waited on disk: the visitor was not slow enough to test".into());
        }
        {
            let s = client.lock().unwrap();
            if s.sessions != 1 || s.endings.iter().any(|e| !e.starts_with("connect")) {
                return Err(format!(
                    "the client's connection did not last: sessions {} endings {:?}",
                    s.sessions, s.endings
                )
                .into());
            }
        }
        let shared: Vec<Shared> = vec![client.clone()];
        stop_and_check(&probe, &settings, &shared).await?;
        Ok(())
    });
    run_sampling(&mut sim, &sampled)
}
