//! Scenario 7: a slow visitor reads a fast download. What is held for it (bytes the client has
//! handed to its channel that the visitor has not read) stays bounded: the channel window, what
//! the simulated network buffers, and russh's per-channel queue (russh adjusts the window when
//! data arrives, not when it is read, so the queue, not the window, bounds the gateway). What
//! reaches a visitor is intact and its owner's. Counted, not asserted (SIM_VERBOSE prints them):
//! while the slow visitor's queue is full russh stops reading the connection, so a neighbour on
//! it is served late or stalls, and keepalive replies can go unread until the connection is
//! dropped (head-of-line blocking inside russh; sim/README.md).

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{nothing_left, pause, wait_live, wait_targets, SharedBoard};
use crate::client::{add_client, stop_all, ClientSpec, Shared};
use crate::service::pattern_byte;
use crate::visitor::{echo, EchoOutcome, TcpVisitor};
use crate::world::{
    add_gateway, builder, run_with_commands, scenario_rng, wait_until, Command, Commands,
    GatewaySettings, StateDir,
};

/// The most one simulated TCP segment carries here: the gateway's pipe reads 64 KiB at a time
/// and russh writes its packets in batches of about that size.
const SEGMENT: u64 = 64 * 1024;

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    let settings = GatewaySettings::default();
    let window = u64::from(settings.channel_window);
    let capacity = rng.gen_range(2..=8usize);
    let mut sim = builder(seed, &mut rng, Duration::from_secs(600))
        .tcp_capacity(capacity)
        .build();
    let state = StateDir::new();
    let probe = add_gateway(&mut sim, seed, &settings, 1, &state);
    let client = add_client(&mut sim, ClientSpec::tcp(seed, 0, 1));
    let clients = vec![(
        client.clone(),
        "client-0".to_owned(),
        crate::client::Kind::Tcp,
    )];

    // Two links, client to gateway and gateway to visitor, each `capacity` segments in flight,
    // plus the pipe's buffer in each direction and one SSH packet in hand.
    let network = 2 * capacity as u64 * SEGMENT + 2 * SEGMENT + 64 * 1024;
    // What the gateway holds is russh's per-channel queue (the runtime sets `channel_buffer_size`
    // to one window's worth of 32 KiB packets) and the pipe's buffer (counted in `network`); the
    // rest of what is in flight sits in the simulated links.
    let russh_queue = window;
    let bound = network + russh_queue;
    let length = 2 * window + rng.gen_range(0..window);

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
        visitor
            .write(format!("download 1 {length}\n").as_bytes())
            .await?;
        let mut received = 0u64;
        let mut held_max = 0u64;
        while received < length {
            tokio::time::sleep(Duration::from_millis(vrng.gen_range(20..80))).await;
            // A stall long enough to starve keepalives ends the SSH connection (russh's
            // head-of-line blocking, see the module doc): counted, not a failure.
            let bytes = match visitor.read_some(vrng.gen_range(4096..32 * 1024)).await {
                Ok(bytes) if !bytes.is_empty() => bytes,
                Ok(_) => {
                    observe(&board, format!("download ended at {received} of {length}"));
                    break;
                }
                Err(e) => {
                    observe(
                        &board,
                        format!("download stalled at {received} of {length}: {e}"),
                    );
                    break;
                }
            };
            for (i, b) in bytes.iter().enumerate() {
                if *b != pattern_byte(1, received + i as u64) {
                    return Err(format!("download corrupt at {}", received + i as u64).into());
                }
            }
            received += bytes.len() as u64;
            let written = slow_client
                .lock()
                .unwrap()
                .download_written
                .get(&1)
                .copied()
                .unwrap_or(0);
            held_max = held_max.max(written.saturating_sub(received));
        }
        let mut b = board.lock().unwrap();
        if held_max > bound {
            b.failures.push(format!(
                "slow visitor: {held_max} bytes in flight, above one window {window} (russh's \
                 channel queue) plus {network} the links and pipes can hold (capacity {capacity} \
                 segments)"
            ));
        }
        b.held_max = held_max;
        b.visitors_done += 1;
        Ok(())
    });

    let neighbour_board = board.clone();
    let mut nrng = ChaCha20Rng::seed_from_u64(rng.gen());
    sim.client("neighbour", async move {
        let board = neighbour_board;
        let targets = wait_targets(&board).await?;
        for r in 0..nrng.gen_range(3..=8u64) {
            tokio::time::sleep(pause(&mut nrng, 2000)).await;
            let started = tokio::time::Instant::now();
            let outcome = echo(targets[0].port(), 100 + r, nrng.gen_range(1..20_000), &[]).await;
            let took = started.elapsed();
            match &outcome {
                EchoOutcome::Intact { owner } if owner == "client-0" => {
                    if took >= Duration::from_secs(5) {
                        observe(&board, format!("neighbour echo {r}: late, {took:?}"));
                    }
                }
                // Late, or cut with its connection: russh's head-of-line blocking.
                EchoOutcome::Stalled { owner, .. } | EchoOutcome::CutClean { owner, .. }
                    if owner.as_deref().is_none_or(|o| o == "client-0") =>
                {
                    observe(
                        &board,
                        format!("neighbour echo {r}: {outcome:?} after {took:?}"),
                    );
                }
                other => board
                    .lock()
                    .unwrap()
                    .failures
                    .push(format!("neighbour echo {r}: {other:?} after {took:?}")),
            }
        }
        board.lock().unwrap().visitors_done += 1;
        Ok(())
    });

    let commands = Commands::default();
    let conductor_commands = commands.clone();
    let conductor_board = board.clone();
    sim.client("conductor", async move {
        let targets = wait_live(&clients, Duration::from_secs(30)).await?;
        board.lock().unwrap().targets = Some(targets);
        wait_until(Duration::from_secs(500), || {
            board.lock().unwrap().visitors_done == 2
        })
        .await;
        {
            let b = board.lock().unwrap();
            if std::env::var_os("SIM_VERBOSE").is_some() {
                eprintln!("seed={seed} held_max={} bound={bound}", b.held_max);
            }
            if b.visitors_done != 2 || !b.failures.is_empty() {
                return Err(format!(
                    "visitors {}/2 done, failures: {:?}",
                    b.visitors_done, b.failures
                )
                .into());
            }
        }
        let shared: Vec<Shared> = vec![client.clone()];
        if let Err(e) = stop_all(&shared).await {
            // A client whose own russh session is stuck behind the same head-of-line blocking
            // cannot hang up; it is crashed instead, and the gateway must still clean up.
            observe(&conductor_board, format!("{e}: crashed instead"));
            conductor_commands
                .lock()
                .unwrap()
                .push(Command::Crash("client-0".to_owned()));
        }
        nothing_left(&probe, &settings, &shared).await?;
        Ok(())
    });
    run_with_commands(&mut sim, &commands)
}

/// Records what russh's head-of-line blocking did this run (printed with `SIM_VERBOSE`).
fn observe(board: &SharedBoard, what: String) {
    if std::env::var_os("SIM_VERBOSE").is_some() {
        eprintln!("observed: {what}");
    }
    board.lock().unwrap().observations += 1;
}
