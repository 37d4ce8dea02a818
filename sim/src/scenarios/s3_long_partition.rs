//! Scenario 3: a partition between the gateway and a client, longer than the keepalive budget.
//! The endpoint goes away (404) while the partition lasts; after repair the client reconnects
//! and gets the same names back; a bystander is served throughout.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{
    check_unpublished, expect_served, pause, random_label, routed, stop_and_check, wait_live,
};
use crate::client::{add_client, ClientSpec, Kind, Shared};
use crate::world::{
    add_gateway, builder, finish, scenario_rng, wait_until, GatewaySettings, StateDir, GATEWAY,
};

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    let settings = GatewaySettings::default();
    let mut sim = builder(seed, &mut rng, Duration::from_secs(300)).build();
    let state = StateDir::new();
    let probe = add_gateway(&mut sim, seed, &settings, 2, &state);

    let mut subject = if rng.gen_bool(0.5) {
        let mut names = vec![None];
        if rng.gen_bool(0.6) {
            names.push(Some(random_label(&mut rng)));
        }
        ClientSpec::http(seed, 0, names)
    } else {
        ClientSpec::tcp(seed, 0, 1)
    };
    subject.reconnect = true;
    let subject_kind = subject.kind;
    let subject = add_client(&mut sim, subject);
    let bystander_spec =
        ClientSpec::http(seed, 1, vec![Some(format!("by{}", random_label(&mut rng)))]);
    let bystander = add_client(&mut sim, bystander_spec);
    let clients = vec![
        (subject.clone(), "client-0".to_owned(), subject_kind),
        (bystander.clone(), "client-1".to_owned(), Kind::Http),
    ];
    let before = pause(&mut rng, 2000);
    let extra = Duration::from_millis(rng.gen_range(1000..10_000));
    let mut vrng = ChaCha20Rng::seed_from_u64(rng.gen());

    sim.client("conductor", async move {
        let targets = wait_live(&clients, Duration::from_secs(30)).await?;
        let urls = subject.lock().unwrap().urls.clone();
        let (mine, theirs): (Vec<_>, Vec<_>) =
            targets.into_iter().partition(|t| t.owner == "client-0");
        for (i, t) in mine.iter().chain(&theirs).enumerate() {
            expect_served(&mut vrng, t, i as u64).await?;
        }
        tokio::time::sleep(before).await;
        turmoil::partition(GATEWAY, "client-0");
        let cut_at = tokio::time::Instant::now();
        let gone = wait_until(settings.keepalive_budget() + Duration::from_secs(5), || {
            mine.iter().all(|t| !routed(&probe, t))
        })
        .await;
        if !gone {
            return Err("the partitioned client's endpoints outlived the keepalive budget".into());
        }
        check_unpublished(&mine, "during the partition").await?;
        for (i, t) in theirs.iter().enumerate() {
            expect_served(&mut vrng, t, 100 + i as u64).await?;
        }
        let until = cut_at + settings.keepalive_budget() + extra;
        tokio::time::sleep_until(until).await;
        turmoil::repair(GATEWAY, "client-0");

        let back = wait_until(Duration::from_secs(30), || {
            let s = subject.lock().unwrap();
            s.live && s.sessions >= 2
        })
        .await;
        let now = subject.lock().unwrap().urls.clone();
        if !back || now != urls {
            let s = subject.lock().unwrap();
            return Err(format!(
                "after repair: back={back} urls {now:?}, before {urls:?}; endings {:?} stderr {:?}",
                s.endings, s.stderr
            )
            .into());
        }
        for (i, t) in mine.iter().chain(&theirs).enumerate() {
            expect_served(&mut vrng, t, 200 + i as u64).await?;
        }
        let shared: Vec<Shared> = vec![subject.clone(), bystander.clone()];
        stop_and_check(&probe, &settings, &shared).await?;
        Ok(())
    });
    finish(sim.run())
}
