//! Scenario 1: many clients with random names and many visitors; every answer comes from the
//! client that owns the name, unknown names get 404, and nothing is left at the end.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{
    pause, random_label, stop_and_check, visitors_finished, wait_live, wait_targets, SharedBoard,
    Target,
};
use crate::client::{add_client, ClientSpec, Kind};
use crate::service::fnv1a;
use crate::visitor::{echo, field, http_request, EchoOutcome};
use crate::world::{add_gateway, builder, finish, scenario_rng, GatewaySettings, StateDir, DOMAIN};

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    let settings = GatewaySettings::default();
    let http_clients = rng.gen_range(2..=5u64);
    let tcp_clients = rng.gen_range(1..=2u64);
    let visitors = rng.gen_range(3..=8usize);
    let mut sim = builder(seed, &mut rng, Duration::from_secs(300)).build();
    let state = StateDir::new();
    let probe = add_gateway(
        &mut sim,
        seed,
        &settings,
        http_clients + tcp_clients,
        &state,
    );

    let mut used = BTreeSet::new();
    let mut clients = Vec::new();
    for index in 0..http_clients + tcp_clients {
        let mut spec = if index < http_clients {
            // At most one random name: a second ("localhost", 80) would be the same forward.
            let mut names: Vec<Option<String>> = (0..rng.gen_range(0..=2))
                .map(|_| loop {
                    let label = random_label(&mut rng);
                    if used.insert(label.clone()) {
                        break Some(label);
                    }
                })
                .collect();
            if names.is_empty() || rng.gen_bool(0.5) {
                let at = rng.gen_range(0..=names.len());
                names.insert(at, None);
            }
            ClientSpec::http(seed, index, names)
        } else {
            ClientSpec::tcp(seed, index, rng.gen_range(1..=2))
        };
        spec.start_delay = pause(&mut rng, 2000);
        let kind = spec.kind;
        let owner = spec.owner.clone();
        clients.push((add_client(&mut sim, spec), owner, kind));
    }

    let board = SharedBoard::default();
    for v in 0..visitors {
        let board = board.clone();
        let mut vrng = ChaCha20Rng::seed_from_u64(rng.gen());
        let requests = vrng.gen_range(3..=10);
        sim.client(format!("visitor-{v}"), async move {
            let targets = wait_targets(&board).await?;
            for r in 0..requests {
                tokio::time::sleep(pause(&mut vrng, 500)).await;
                let failure = visit(&mut vrng, &targets, (v * 100 + r) as u64).await.err();
                let mut b = board.lock().unwrap();
                b.failures.extend(failure);
            }
            board.lock().unwrap().visitors_done += 1;
            Ok(())
        });
    }

    sim.client("conductor", async move {
        let targets = wait_live(&clients, Duration::from_secs(30)).await?;
        board.lock().unwrap().targets = Some(targets);
        visitors_finished(&board, visitors, Duration::from_secs(240)).await?;
        let shared: Vec<_> = clients.iter().map(|(c, _, _)| c.clone()).collect();
        stop_and_check(&probe, &settings, &shared).await?;
        Ok(())
    });
    finish(sim.run())
}

/// One request to a random target (or an unknown name); the answer must be the owner's.
async fn visit(rng: &mut ChaCha20Rng, targets: &[Target], id: u64) -> Result<(), String> {
    if rng.gen_bool(0.1) {
        let host = format!("nobody-{}.{DOMAIN}", random_label(rng));
        let outcome = http_request(&host, "GET", "/", b"").await;
        return match outcome.status() {
            Some(404) => Ok(()),
            _ => Err(format!("unknown {host}: {outcome:?}")),
        };
    }
    let target = &targets[rng.gen_range(0..targets.len())];
    match target.kind {
        Kind::Http => {
            let host = target.host();
            let path = format!("/r{id}");
            let body: Vec<u8> = (0..rng.gen_range(0..3000)).map(|_| rng.gen()).collect();
            let method = if body.is_empty() { "GET" } else { "POST" };
            let outcome = http_request(&host, method, &path, &body).await;
            let ok = outcome.owner() == Some(target.owner.as_str())
                && matches!(&outcome, crate::visitor::HttpOutcome::Response { body: b, .. }
                    if field(b, "host") == Some(host.as_str())
                        && field(b, "path") == Some(path.as_str())
                        && field(b, "hash") == Some(format!("{:016x}", fnv1a(&body)).as_str()));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{method} {host}{path} (owner {}): {outcome:?}",
                    target.owner
                ))
            }
        }
        Kind::Tcp => {
            let len = rng.gen_range(1..20_000);
            let pauses: Vec<_> = (0..3)
                .map(|_| (rng.gen_range(1..8000), pause(rng, 50)))
                .collect();
            match echo(target.port(), id, len, &pauses).await {
                EchoOutcome::Intact { owner } if owner == target.owner => Ok(()),
                other => Err(format!(
                    "echo on {} (owner {}): {other:?}",
                    target.url, target.owner
                )),
            }
        }
    }
}
