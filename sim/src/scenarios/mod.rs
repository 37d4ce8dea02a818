//! The scenarios of issue 7, one module each. Each takes a seed and returns what went wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha20Rng;

use crate::client::{stop_all, url_host, url_port, violations, Kind, Shared};
use crate::visitor::{echo, http_request, EchoOutcome, TcpVisitor};
use crate::world::{check_nothing_left, wait_until, GatewaySettings, Probe};

pub mod s1_routing;
pub mod s2_crash;
pub mod s3_long_partition;
pub mod s4_short_outage;
pub mod s5_cut_upload;
pub mod s6_takeover;
pub mod s7_slow_visitor;
pub mod s8_spill_cap;
pub mod slow;

/// A random DNS label of 3 to 10 letters and digits, starting with a letter.
pub fn random_label(rng: &mut ChaCha20Rng) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = rng.gen_range(3..=10);
    let mut label = String::new();
    label.push(LETTERS[rng.gen_range(0..LETTERS.len())] as char);
    for _ in 1..len {
        label.push(ALNUM[rng.gen_range(0..ALNUM.len())] as char);
    }
    label
}

/// One published endpoint and who must answer on it.
#[derive(Clone, Debug)]
pub struct Target {
    pub owner: String,
    pub url: String,
    pub kind: Kind,
}

impl Target {
    /// The Host header of an http target.
    pub fn host(&self) -> String {
        url_host(&self.url)
    }

    /// The port of a tcp target.
    pub fn port(&self) -> u16 {
        url_port(&self.url)
    }
}

/// What the conductor and the visitors share in one run.
#[derive(Default)]
pub struct Board {
    pub targets: Option<Vec<Target>>,
    pub visitors_done: usize,
    pub failures: Vec<String>,
    /// Visitors whose channel the client refused, as they saw it.
    pub refused_seen: usize,
    /// Where the slow visitor is (scenarios 7 and 8).
    pub slow: slow::SlowState,
    /// What its neighbours saw.
    pub neighbours: slow::NeighbourFigures,
}

/// A board shared between the hosts of one run.
pub type SharedBoard = Arc<Mutex<Board>>;

/// Waits (in simulated time, at most `within`) until `expected` visitors have finished, then fails
/// on anything they recorded.
pub async fn visitors_finished(
    board: &SharedBoard,
    expected: usize,
    within: Duration,
) -> Result<(), String> {
    wait_until(within, || board.lock().unwrap().visitors_done == expected).await;
    let b = board.lock().unwrap();
    if b.visitors_done != expected || !b.failures.is_empty() {
        return Err(format!(
            "visitors {}/{expected} done, failures: {:?}",
            b.visitors_done, b.failures
        ));
    }
    Ok(())
}

/// The end of every run once its clients are gone: the gateway holds nothing, and no client saw
/// a violation.
pub async fn nothing_left(
    probe: &Probe,
    settings: &GatewaySettings,
    clients: &[Shared],
) -> Result<(), String> {
    check_nothing_left(probe, settings).await?;
    let bad = violations(clients);
    if !bad.is_empty() {
        return Err(format!("client violations: {bad:?}"));
    }
    Ok(())
}

/// Stops `clients`, then [`nothing_left`].
pub async fn stop_and_check(
    probe: &Probe,
    settings: &GatewaySettings,
    clients: &[Shared],
) -> Result<(), String> {
    stop_all(clients).await?;
    nothing_left(probe, settings, clients).await
}

/// The targets, once the conductor has published them.
pub async fn wait_targets(board: &SharedBoard) -> Result<Vec<Target>, String> {
    let ok = wait_until(Duration::from_secs(120), || {
        board.lock().unwrap().targets.is_some()
    })
    .await;
    if !ok {
        return Err("no targets published".to_owned());
    }
    Ok(board.lock().unwrap().targets.clone().unwrap_or_default())
}

/// Waits until every client has all its endpoints, and returns them as targets.
pub async fn wait_live(
    clients: &[(Shared, String, Kind)],
    limit: Duration,
) -> Result<Vec<Target>, String> {
    let ok = wait_until(limit, || {
        clients.iter().all(|(c, _, _)| c.lock().unwrap().live)
    })
    .await;
    if !ok {
        let states: Vec<String> = clients
            .iter()
            .map(|(c, owner, _)| {
                let s = c.lock().unwrap();
                format!(
                    "{owner}: live={} endings={:?} stderr={:?}",
                    s.live, s.endings, s.stderr
                )
            })
            .collect();
        return Err(format!("clients not live in time: {}", states.join("; ")));
    }
    Ok(clients
        .iter()
        .flat_map(|(c, owner, kind)| {
            c.lock()
                .unwrap()
                .urls
                .iter()
                .map(|url| Target {
                    owner: owner.clone(),
                    url: url.clone(),
                    kind: *kind,
                })
                .collect::<Vec<_>>()
        })
        .collect())
}

/// A short random pause.
pub fn pause(rng: &mut ChaCha20Rng, max_ms: u64) -> Duration {
    Duration::from_millis(rng.gen_range(0..=max_ms))
}

pub fn routed(probe: &Probe, target: &Target) -> bool {
    match target.kind {
        Kind::Http => probe.routes_host(&target.host()),
        Kind::Tcp => probe.routes_port(target.port()),
    }
}

/// A lost client's endpoints: http answers 404, tcp takes no visitor through.
pub async fn check_unpublished(targets: &[Target], when: &str) -> Result<(), String> {
    for t in targets {
        match t.kind {
            Kind::Http => {
                let outcome = http_request(&t.host(), "GET", "/", b"").await;
                if outcome.status() != Some(404) {
                    return Err(format!("{} {when}: {outcome:?}, not 404", t.url));
                }
            }
            Kind::Tcp => {
                if let Ok(mut v) = TcpVisitor::connect(t.port()).await {
                    match v.read_some(100).await {
                        Ok(bytes) if bytes.is_empty() => {}
                        Err(_) => {}
                        Ok(bytes) => {
                            return Err(format!(
                                "{} {when}: a visitor got {:?}",
                                t.url,
                                String::from_utf8_lossy(&bytes)
                            ))
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// A request to a healthy client: it must succeed, answered by the owner.
pub async fn expect_served(rng: &mut ChaCha20Rng, target: &Target, id: u64) -> Result<(), String> {
    match target.kind {
        Kind::Http => {
            let outcome = http_request(&target.host(), "GET", &format!("/b{id}"), b"").await;
            if outcome.owner() == Some(target.owner.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "{} (owner {}): {outcome:?}",
                    target.url, target.owner
                ))
            }
        }
        Kind::Tcp => {
            let pauses: Vec<_> = (0..3)
                .map(|_| (rng.gen_range(100..4000), pause(rng, 100)))
                .collect();
            match echo(target.port(), id, rng.gen_range(1..10_000), &pauses).await {
                EchoOutcome::Intact { owner } if owner == target.owner => Ok(()),
                other => Err(format!(
                    "echo on {} (owner {}): {other:?}",
                    target.url, target.owner
                )),
            }
        }
    }
}
