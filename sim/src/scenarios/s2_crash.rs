//! Scenario 2: a client crashes mid-stream. Its visitors get a clean error or close, its names
//! answer 404 once the loss is detected and stay reserved for its key (another key is refused;
//! the same key, restarted, gets them back), and the other clients are untouched.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{
    check_unpublished, expect_served, pause, random_label, routed, stop_and_check,
    visitors_finished, wait_live, wait_targets, SharedBoard, Target,
};
use crate::client::{add_client, ClientSpec, Deferred, Kind, Shared};
use crate::visitor::{echo, http_request, EchoOutcome, HttpOutcome};
use crate::world::{
    add_gateway, builder, run_with_commands, scenario_rng, wait_until, Command, Commands,
    GatewaySettings, StateDir, DOMAIN,
};

const VICTIM: &str = "client-0";

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    let settings = GatewaySettings::default();
    let bystanders = rng.gen_range(1..=3u64);
    let victim_kind = if rng.gen_bool(0.5) {
        Kind::Http
    } else {
        Kind::Tcp
    };
    let mut sim = builder(seed, &mut rng, Duration::from_secs(300)).build();
    let state = StateDir::new();
    // Keys: victim 0, bystanders 1..=n, intruder n+1.
    let probe = add_gateway(&mut sim, seed, &settings, bystanders + 2, &state);

    let victim_spec = match victim_kind {
        Kind::Http => {
            let mut names = vec![None];
            if rng.gen_bool(0.7) {
                names.push(Some(format!("v{}", random_label(&mut rng))));
            }
            ClientSpec::http(seed, 0, names)
        }
        Kind::Tcp => ClientSpec::tcp(seed, 0, rng.gen_range(1..=2)),
    };
    let victim = add_client(&mut sim, victim_spec);
    let mut live = vec![(victim.clone(), VICTIM.to_owned(), victim_kind)];
    for index in 1..=bystanders {
        let spec = if rng.gen_bool(0.5) {
            ClientSpec::http(
                seed,
                index,
                vec![Some(format!("b{index}{}", random_label(&mut rng)))],
            )
        } else {
            ClientSpec::tcp(seed, index, 1)
        };
        let (owner, kind) = (spec.owner.clone(), spec.kind);
        live.push((add_client(&mut sim, spec), owner, kind));
    }
    let deferred = Deferred::default();
    let mut intruder_spec = ClientSpec::http(seed, bystanders + 1, Vec::new());
    intruder_spec.kind = victim_kind;
    intruder_spec.deferred = Some(deferred.clone());
    let intruder = add_client(&mut sim, intruder_spec);

    let board = SharedBoard::default();
    // Visitors caught on the victim when it dies.
    let caught = rng.gen_range(1..=4usize);
    for v in 0..caught {
        let board = board.clone();
        let mut vrng = ChaCha20Rng::seed_from_u64(rng.gen());
        sim.client(format!("caught-{v}"), async move {
            let targets = wait_targets(&board).await?;
            let mine: Vec<_> = targets
                .iter()
                .filter(|t| t.owner == VICTIM)
                .cloned()
                .collect();
            let target = &mine[vrng.gen_range(0..mine.len())];
            tokio::time::sleep(pause(&mut vrng, 300)).await;
            let failure = caught_visit(&mut vrng, target, 9000 + v as u64).await.err();
            let mut b = board.lock().unwrap();
            b.failures.extend(failure);
            b.visitors_done += 1;
            Ok(())
        });
    }
    // Visitors of the others, before, during and after the crash.
    let others = rng.gen_range(1..=3usize);
    for v in 0..others {
        let board = board.clone();
        let mut vrng = ChaCha20Rng::seed_from_u64(rng.gen());
        sim.client(format!("visitor-{v}"), async move {
            let targets = wait_targets(&board).await?;
            let theirs: Vec<_> = targets
                .iter()
                .filter(|t| t.owner != VICTIM)
                .cloned()
                .collect();
            for r in 0..vrng.gen_range(4..=12) {
                tokio::time::sleep(pause(&mut vrng, 800)).await;
                let target = &theirs[vrng.gen_range(0..theirs.len())];
                let failure = expect_served(&mut vrng, target, (v * 100 + r) as u64)
                    .await
                    .err();
                board.lock().unwrap().failures.extend(failure);
            }
            board.lock().unwrap().visitors_done += 1;
            Ok(())
        });
    }

    let commands = Commands::default();
    let conductor_commands = commands.clone();
    let crash_after = pause(&mut rng, 2500);
    sim.client("conductor", async move {
        let commands = conductor_commands;
        let targets = wait_live(&live, Duration::from_secs(30)).await?;
        let victim_targets: Vec<Target> = targets.iter().filter(|t| t.owner == VICTIM).cloned().collect();
        let victim_urls = victim.lock().unwrap().urls.clone();
        board.lock().unwrap().targets = Some(targets);

        tokio::time::sleep(crash_after).await;
        commands.lock().unwrap().push(Command::Crash(VICTIM.to_owned()));
        let gone = wait_until(settings.keepalive_budget() + Duration::from_secs(5), || {
            victim_targets.iter().all(|t| !routed(&probe, t))
        })
        .await;
        if !gone {
            return Err("the crashed client's endpoints stayed routed".into());
        }
        check_unpublished(&victim_targets, "after the crash").await?;

        // Another key asks for the crashed client's names: refused, still reserved.
        let asked = victim_targets
            .iter()
            .map(|t| match t.kind {
                Kind::Http => Some(t.host().trim_end_matches(&format!(".{DOMAIN}")).to_owned()),
                Kind::Tcp => Some(t.port().to_string()),
            })
            .collect();
        *deferred.lock().unwrap() = Some(asked);
        let refused = wait_until(Duration::from_secs(15), || {
            let s = intruder.lock().unwrap();
            s.stderr.iter().any(|l| l.contains("reserved")) || s.forward_refusals > 0 || s.live
        })
        .await;
        let intruder_failed = {
            let s = intruder.lock().unwrap();
            (!refused || s.live).then(|| {
                format!(
                    "another key asked for the crashed client's names: live={} refusals={} endings={:?} stderr={:?}",
                    s.live, s.forward_refusals, s.endings, s.stderr
                )
            })
        };
        if let Some(failure) = intruder_failed {
            return Err(failure.into());
        }
        check_unpublished(&victim_targets, "after another key asked").await?;

        // The same key comes back and gets the same names.
        commands.lock().unwrap().push(Command::Bounce(VICTIM.to_owned()));
        let back = wait_until(Duration::from_secs(20), || victim.lock().unwrap().sessions >= 2).await;
        let urls = victim.lock().unwrap().urls.clone();
        if !back || urls != victim_urls {
            return Err(format!("restarted client: back={back} urls {urls:?}, before {victim_urls:?}").into());
        }
        for (i, t) in victim_targets.iter().enumerate() {
            expect_served(&mut ChaCha20Rng::seed_from_u64(i as u64), t, 7000 + i as u64).await?;
        }

        let visitors = caught + others;
        visitors_finished(&board, visitors, Duration::from_secs(200)).await?;
        let mut shared: Vec<Shared> = live.iter().map(|(c, _, _)| c.clone()).collect();
        shared.push(intruder.clone());
        stop_and_check(&probe, &settings, &shared).await?;
        Ok(())
    });
    run_with_commands(&mut sim, &commands)
}

/// A long request to the victim: done before the crash, or a clean error or close, never a
/// hang and never anyone else's answer.
async fn caught_visit(rng: &mut ChaCha20Rng, target: &Target, id: u64) -> Result<(), String> {
    match target.kind {
        Kind::Http => {
            let path = format!("/slow/{}", rng.gen_range(500..4000));
            let outcome = http_request(&target.host(), "GET", &path, b"").await;
            match &outcome {
                HttpOutcome::Response { status: 200, .. } if outcome.owner() == Some(VICTIM) => {
                    Ok(())
                }
                HttpOutcome::Response {
                    status: 502 | 404, ..
                }
                | HttpOutcome::Cut(_) => Ok(()),
                _ => Err(format!("caught visitor of {}: {outcome:?}", target.url)),
            }
        }
        Kind::Tcp => {
            let pauses: Vec<_> = (0..4)
                .map(|_| (rng.gen_range(200..3000), pause(rng, 400)))
                .collect();
            match echo(target.port(), id, rng.gen_range(5_000..60_000), &pauses).await {
                EchoOutcome::Intact { owner } if owner == VICTIM => Ok(()),
                EchoOutcome::CutClean { owner: None, .. } => Ok(()),
                EchoOutcome::CutClean {
                    owner: Some(owner), ..
                } if owner == VICTIM => Ok(()),
                other => Err(format!("caught visitor of {}: {other:?}", target.url)),
            }
        }
    }
}
