//! Scenario 5: visitors hang up mid-upload and the client refuses some channel opens. The SSH
//! connection and its other channels carry on: other streams arrive intact, the connection is
//! the same one at the end, and nothing of the cut streams is left.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{
    pause, random_label, stop_and_check, visitors_finished, wait_live, wait_targets, SharedBoard,
    Target,
};
use crate::client::{add_client, ClientSpec, Kind, Shared};
use crate::service::{fnv1a, pattern};
use crate::visitor::{echo, field, http_request, EchoOutcome, HttpOutcome, TcpVisitor};
use crate::world::{
    add_gateway, builder, finish, scenario_rng, GatewaySettings, StateDir, HTTP_PORT,
};

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    let settings = GatewaySettings::default();
    let mut sim = builder(seed, &mut rng, Duration::from_secs(300)).build();
    let state = StateDir::new();
    let probe = add_gateway(&mut sim, seed, &settings, 1, &state);

    let mut spec = if rng.gen_bool(0.5) {
        ClientSpec::http(seed, 0, vec![Some(random_label(&mut rng))])
    } else {
        ClientSpec::tcp(seed, 0, 1)
    };
    spec.refuse_rate = rng.gen_range(0.1..0.5);
    let kind = spec.kind;
    let client = add_client(&mut sim, spec);
    let clients = vec![(client.clone(), "client-0".to_owned(), kind)];

    let board = SharedBoard::default();
    let cutters = rng.gen_range(1..=3usize);
    let steady = rng.gen_range(1..=3usize);
    for v in 0..cutters + steady {
        let board = board.clone();
        let mut vrng = ChaCha20Rng::seed_from_u64(rng.gen());
        let cutter = v < cutters;
        sim.client(format!("visitor-{v}"), async move {
            let targets = wait_targets(&board).await?;
            let target = &targets[0];
            for r in 0..vrng.gen_range(2..=5u64) {
                tokio::time::sleep(pause(&mut vrng, 700)).await;
                let id = v as u64 * 100 + r;
                let failure = if cutter {
                    cut_upload(&mut vrng, target, id).await;
                    None
                } else {
                    match steady_visit(&mut vrng, target, id).await {
                        Ok(true) => None,
                        Ok(false) => {
                            board.lock().unwrap().refused_seen += 1;
                            None
                        }
                        Err(e) => Some(e),
                    }
                };
                board.lock().unwrap().failures.extend(failure);
            }
            board.lock().unwrap().visitors_done += 1;
            Ok(())
        });
    }

    sim.client("conductor", async move {
        let targets = wait_live(&clients, Duration::from_secs(30)).await?;
        let target = targets[0].clone();
        board.lock().unwrap().targets = Some(targets);
        let visitors = cutters + steady;
        visitors_finished(&board, visitors, Duration::from_secs(200)).await?;
        // Still the same connection, still serving: the client refuses at random, so try a few.
        let mut vrng = ChaCha20Rng::seed_from_u64(1);
        let mut served = false;
        for i in 0..20 {
            if steady_visit(&mut vrng, &target, 5000 + i)
                .await
                .is_ok_and(|served| served)
            {
                served = true;
                break;
            }
        }
        {
            let s = client.lock().unwrap();
            let refused_seen = board.lock().unwrap().refused_seen;
            if !served
                || s.sessions != 1
                || s.endings.iter().any(|e| !e.starts_with("connect"))
                || refused_seen > s.refused
            {
                return Err(format!(
                    "after cut uploads and refusals: served={served} sessions {} endings {:?} \
                     refused {} but {refused_seen} visitors saw a refusal",
                    s.sessions, s.endings, s.refused
                )
                .into());
            }
        }
        let shared: Vec<Shared> = vec![client.clone()];
        stop_and_check(&probe, &settings, &shared).await?;
        Ok(())
    });
    finish(sim.run())
}

/// Starts an upload, sends part of it, and hangs up.
async fn cut_upload(rng: &mut ChaCha20Rng, target: &Target, id: u64) {
    let total = rng.gen_range(10_000..200_000usize);
    let sent = rng.gen_range(0..total);
    let body = pattern(id, 0, sent);
    let port = match target.kind {
        Kind::Http => HTTP_PORT,
        Kind::Tcp => target.port(),
    };
    let Ok(mut visitor) = TcpVisitor::connect(port).await else {
        return;
    };
    let head = match target.kind {
        Kind::Http => format!(
            "POST /cut{id} HTTP/1.1\r\nHost: {}\r\nContent-Length: {total}\r\n\r\n",
            target.host()
        ),
        Kind::Tcp => "upload\n".to_owned(),
    };
    let _ = visitor.write(head.as_bytes()).await;
    let _ = visitor.write(&body).await;
    tokio::time::sleep(pause(rng, 300)).await;
    drop(visitor);
}

/// A whole exchange: served by the owner and intact, or refused by the client (502 for http; for
/// tcp a close before any byte). `Ok(true)` when served.
async fn steady_visit(rng: &mut ChaCha20Rng, target: &Target, id: u64) -> Result<bool, String> {
    match target.kind {
        Kind::Http => {
            let body = pattern(id, 0, rng.gen_range(0..50_000));
            let outcome = http_request(&target.host(), "POST", &format!("/s{id}"), &body).await;
            match &outcome {
                // Refused: 502, or a reset when the gateway closes with the upload unread (the
                // reset can overtake the 502; counted against the client's refusals).
                HttpOutcome::Response { status: 502, .. } => Ok(false),
                HttpOutcome::Cut(reason) if reason.contains("reset") => Ok(false),
                HttpOutcome::Response {
                    status: 200,
                    body: b,
                } if outcome.owner() == Some("client-0")
                    && field(b, "hash") == Some(format!("{:016x}", fnv1a(&body)).as_str()) =>
                {
                    Ok(true)
                }
                _ => Err(format!("steady upload {id}: {outcome:?}")),
            }
        }
        Kind::Tcp => {
            let pauses: Vec<_> = (0..3)
                .map(|_| (rng.gen_range(1..20_000), pause(rng, 100)))
                .collect();
            match echo(target.port(), id, rng.gen_range(1..60_000), &pauses).await {
                EchoOutcome::Intact { owner } if owner == "client-0" => Ok(true),
                EchoOutcome::CutClean {
                    owner: None,
                    echoed: 0,
                } => Ok(false),
                other => Err(format!("steady echo {id}: {other:?}")),
            }
        }
    }
}
