//! Scenario 4: the link between the gateway and a client stalls for less than the keepalive
//! budget while streams run. Nothing is lost, duplicated or reordered (every byte checked at its
//! offset, every upload by hash), and the client keeps its one connection.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{
    pause, random_label, stop_and_check, visitors_finished, wait_live, wait_targets, SharedBoard,
};
use crate::client::{add_client, ClientSpec, Kind, Shared};
use crate::service::fnv1a;
use crate::visitor::{echo, field, http_request, EchoOutcome};
use crate::world::{
    add_gateway, builder, finish, scenario_rng, GatewaySettings, StateDir, GATEWAY,
};

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    let settings = GatewaySettings::default();
    let mut sim = builder(seed, &mut rng, Duration::from_secs(300)).build();
    let state = StateDir::new();
    let probe = add_gateway(&mut sim, seed, &settings, 1, &state);

    let spec = if rng.gen_bool(0.5) {
        ClientSpec::http(seed, 0, vec![Some(random_label(&mut rng))])
    } else {
        ClientSpec::tcp(seed, 0, 1)
    };
    let kind = spec.kind;
    let client = add_client(&mut sim, spec);
    let clients = vec![(client.clone(), "client-0".to_owned(), kind)];

    let board = SharedBoard::default();
    let visitors = rng.gen_range(1..=4usize);
    for v in 0..visitors {
        let board = board.clone();
        let mut vrng = ChaCha20Rng::seed_from_u64(rng.gen());
        sim.client(format!("visitor-{v}"), async move {
            let targets = wait_targets(&board).await?;
            let target = &targets[0];
            for r in 0..vrng.gen_range(1..=4u64) {
                tokio::time::sleep(pause(&mut vrng, 1500)).await;
                let id = v as u64 * 100 + r;
                let failure = match target.kind {
                    Kind::Http => {
                        let body: Vec<u8> = (0..vrng.gen_range(1..200_000)).map(|_| vrng.gen()).collect();
                        let outcome = http_request(&target.host(), "POST", &format!("/u{id}"), &body).await;
                        let intact = outcome.owner() == Some("client-0")
                            && matches!(&outcome, crate::visitor::HttpOutcome::Response { body: b, .. }
                                if field(b, "hash") == Some(format!("{:016x}", fnv1a(&body)).as_str())
                                    && field(b, "len") == Some(body.len().to_string().as_str()));
                        (!intact).then(|| format!("upload {id} of {} bytes: {outcome:?}", body.len()))
                    }
                    Kind::Tcp => {
                        let pauses: Vec<_> = (0..4)
                            .map(|_| (vrng.gen_range(1..30_000), pause(&mut vrng, 300)))
                            .collect();
                        match echo(target.port(), id, vrng.gen_range(1..300_000), &pauses).await {
                            EchoOutcome::Intact { owner } if owner == "client-0" => None,
                            other => Some(format!("echo {id}: {other:?}")),
                        }
                    }
                };
                board.lock().unwrap().failures.extend(failure);
            }
            board.lock().unwrap().visitors_done += 1;
            Ok(())
        });
    }

    let before = pause(&mut rng, 2000);
    // Well inside the budget: russh's keepalive timers fire at interval granularity.
    let outage = Duration::from_millis(
        rng.gen_range(100..=settings.keepalive_budget().as_millis() as u64 / 2),
    );
    sim.client("conductor", async move {
        let targets = wait_live(&clients, Duration::from_secs(30)).await?;
        board.lock().unwrap().targets = Some(targets);
        tokio::time::sleep(before).await;
        turmoil::hold(GATEWAY, "client-0");
        tokio::time::sleep(outage).await;
        turmoil::release(GATEWAY, "client-0");
        visitors_finished(&board, visitors, Duration::from_secs(200))
            .await
            .map_err(|e| format!("outage of {outage:?}: {e}"))?;
        {
            let s = client.lock().unwrap();
            if s.sessions != 1 || s.endings.iter().any(|e| !e.starts_with("connect")) {
                return Err(format!(
                    "outage of {outage:?} cost the connection: sessions {} endings {:?}",
                    s.sessions, s.endings
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
