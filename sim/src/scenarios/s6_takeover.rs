//! Scenario 6: takeover. The same key connects again, from another host, while its old
//! connection is still believed alive (healthy, or silently cut off). The new connection gets
//! the names, the old session is told once, visitors reach the new one from then on, and the old
//! connection's eventual end does not take the names with it.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{expect_served, pause, random_label, stop_and_check, wait_live, Target};
use crate::client::{add_client, ClientSpec, Deferred, Kind, Shared};
use crate::world::{
    add_gateway, builder, finish, scenario_rng, wait_until, GatewaySettings, StateDir, GATEWAY,
};

/// Runs one seed.
pub fn run(seed: u64) -> Result<(), String> {
    let mut rng = scenario_rng(seed);
    let settings = GatewaySettings::default();
    let mut sim = builder(seed, &mut rng, Duration::from_secs(300)).build();
    let state = StateDir::new();
    let probe = add_gateway(&mut sim, seed, &settings, 1, &state);

    let http = rng.gen_bool(0.6);
    let names: Vec<Option<String>> = if http {
        (0..rng.gen_range(1..=2))
            .map(|i| Some(format!("{}{i}", random_label(&mut rng))))
            .collect()
    } else {
        vec![None]
    };
    let old_spec = if http {
        ClientSpec::http(seed, 0, names.clone())
    } else {
        ClientSpec::tcp(seed, 0, 1)
    };
    let kind = old_spec.kind;
    let old = add_client(&mut sim, old_spec.clone());
    // The new connection: same key, another host, its names known once the old one has them.
    let deferred = Deferred::default();
    let mut new_spec = old_spec;
    new_spec.host = "client-new".to_owned();
    new_spec.owner = "client-new".to_owned();
    new_spec.deferred = Some(deferred.clone());
    let new = add_client(&mut sim, new_spec);

    let silent_old = rng.gen_bool(0.5);
    let before = pause(&mut rng, 2000);
    let mut vrng = ChaCha20Rng::seed_from_u64(rng.gen());
    if std::env::var_os("SIM_VERBOSE").is_some() {
        eprintln!("seed={seed} http={http} silent_old={silent_old}");
    }
    sim.client("conductor", async move {
        let targets = wait_live(
            &[(old.clone(), "client-0".to_owned(), kind)],
            Duration::from_secs(30),
        )
        .await?;
        for (i, t) in targets.iter().enumerate() {
            expect_served(&mut vrng, t, i as u64).await?;
        }
        tokio::time::sleep(before).await;
        if silent_old {
            // The old connection's host drops off the network without a word.
            turmoil::partition(GATEWAY, "client-0");
        }
        let asked = match kind {
            Kind::Http => names.clone(),
            Kind::Tcp => targets.iter().map(|t| Some(t.port().to_string())).collect(),
        };
        *deferred.lock().unwrap() = Some(asked);
        let taken = wait_live(
            &[(new.clone(), "client-new".to_owned(), kind)],
            Duration::from_secs(20),
        )
        .await?;
        let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
        let new_urls: Vec<&str> = taken.iter().map(|t| t.url.as_str()).collect();
        if urls != new_urls {
            return Err(
                format!("takeover gave {new_urls:?}, the old connection had {urls:?}").into(),
            );
        }
        let moved: Vec<Target> = taken;
        for (i, t) in moved.iter().enumerate() {
            expect_served(&mut vrng, t, 100 + i as u64).await?;
        }
        if !silent_old {
            let told = wait_until(Duration::from_secs(10), || {
                old.lock()
                    .unwrap()
                    .stderr
                    .iter()
                    .any(|l| l.contains("taken over"))
            })
            .await;
            if !told {
                let s = old.lock().unwrap();
                return Err(format!("the old session was not told: stderr {:?}", s.stderr).into());
            }
        }
        // Let the silent connection die of its keepalives; the names must stay with the new one.
        tokio::time::sleep(settings.keepalive_budget() + Duration::from_secs(3)).await;
        for (i, t) in moved.iter().enumerate() {
            expect_served(&mut vrng, t, 200 + i as u64).await?;
        }
        if silent_old {
            turmoil::repair(GATEWAY, "client-0");
        }
        let shared: Vec<Shared> = vec![old.clone(), new.clone()];
        stop_and_check(&probe, &settings, &shared).await?;
        Ok(())
    });
    finish(sim.run())
}
