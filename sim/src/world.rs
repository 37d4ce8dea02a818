//! One simulated world per seed: turmoil seeded and bounded, the gateway host running the real
//! server over [`SimNet`], keys derived from the seed, and a probe that reads the server's counts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::PrivateKey;
use tunnel_core::SpillLimits;
use tunnel_runtime::config::ServerConfig;
use tunnel_runtime::driver::Driver;
use tunnel_runtime::keys::AuthorizedKeys;

use crate::net::SimNet;

/// The gateway's host name in the simulation.
pub const GATEWAY: &str = "gateway";
/// Where the gateway listens.
pub const SSH_PORT: u16 = 22;
/// The HTTP listener.
pub const HTTP_PORT: u16 = 80;
/// The base domain endpoints live under.
pub const DOMAIN: &str = "tunnel.test";

/// What a scenario tunes on the gateway.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Idle time before the server sends a keepalive.
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the server drops a connection.
    pub keepalive_max: usize,
    /// How long a lost connection's names stay reserved.
    pub name_grace: Duration,
    /// The SSH channel window.
    pub channel_window: u32,
    /// What slow visitors may make the gateway hold (`--spill-*`); the spill directory is the
    /// default, `spill/` inside the run's [`StateDir`].
    pub spill: SpillLimits,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(2),
            keepalive_max: 3,
            name_grace: Duration::from_secs(20),
            channel_window: tunnel_runtime::config::MIN_CHANNEL_WINDOW,
            spill: SpillLimits::default(),
        }
    }
}

impl GatewaySettings {
    /// How long a silent peer can stay connected before the server gives up on it (russh sends
    /// a keepalive after each idle interval and closes after `max` unanswered ones).
    pub fn keepalive_budget(&self) -> Duration {
        self.keepalive_interval * (self.keepalive_max as u32 + 1)
    }
}

/// The scenario's own randomness: the run seed, on a stream apart from the core's and turmoil's.
pub fn scenario_rng(seed: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(7);
    rng
}

/// A turmoil builder seeded with `seed`, with latencies drawn from it, bounded in sim time.
pub fn builder(seed: u64, rng: &mut ChaCha20Rng, duration: Duration) -> turmoil::Builder {
    builder_with_latency(seed, rng, duration).0
}

/// [`builder`], and the longest one-way latency of any message in it (for time bounds derived
/// from the network). Draws the same numbers, so a seed builds the same world either way.
pub fn builder_with_latency(
    seed: u64,
    rng: &mut ChaCha20Rng,
    duration: Duration,
) -> (turmoil::Builder, Duration) {
    let min_ms = rng.gen_range(0..=5);
    let max_ms = min_ms + rng.gen_range(1..=40);
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .enable_random_order()
        .simulation_duration(duration)
        .min_message_latency(Duration::from_millis(min_ms))
        .max_message_latency(Duration::from_millis(max_ms));
    (builder, Duration::from_millis(max_ms))
}

/// The ed25519 key of client `index` in run `seed`.
pub fn client_key(seed: u64, index: u64) -> PrivateKey {
    key_from(seed, 1000 + index)
}

fn key_from(seed: u64, stream: u64) -> PrivateKey {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes);
    PrivateKey::from(Ed25519Keypair::from_seed(&bytes))
}

/// The server's counts, read under its lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: usize,
    pub endpoints: usize,
    pub routes: usize,
    pub held_ports: usize,
    pub reservations: usize,
    pub timers: usize,
    pub streams: usize,
    pub listeners: usize,
    /// Tokio tasks alive on the gateway host beyond those right after start.
    pub extra_tasks: isize,
    /// Visitors' spill buffers alive, and the bytes they have waiting on disk.
    pub spill_buffers: usize,
    pub spilled_on_disk: u64,
}

impl Counts {
    /// Nothing left of any connection (reservations may remain until the grace ends).
    pub fn connections_gone(&self) -> bool {
        self.connections == 0
            && self.endpoints == 0
            && self.routes == 0
            && self.streams == 0
            && self.listeners == 0
            && self.extra_tasks == 0
            && self.spill_buffers == 0
            && self.spilled_on_disk == 0
    }

    /// Nothing at all: also no reservation, held port or pending deadline.
    pub fn all_gone(&self) -> bool {
        self.connections_gone()
            && self.held_ports == 0
            && self.reservations == 0
            && self.timers == 0
    }
}

struct Probed {
    driver: Arc<Driver<SimNet>>,
    baseline_tasks: usize,
    alive_tasks: usize,
    /// The most bytes seen waiting on disk for visitors.
    peak_on_disk: u64,
}

/// Reads the gateway's core counts and runtime counters from any host.
#[derive(Clone, Default)]
pub struct Probe(Arc<Mutex<Option<Probed>>>);

impl Probe {
    /// The counts now; `None` before the gateway started.
    pub fn counts(&self) -> Option<Counts> {
        let guard = self.0.lock().unwrap();
        let probed = guard.as_ref()?;
        let stats = &probed.driver.stats;
        let (connections, endpoints, routes, held_ports, reservations, timers) =
            probed.driver.with_gateway(|g| {
                (
                    g.connection_count(),
                    g.endpoint_count(),
                    g.route_count(),
                    g.held_port_count(),
                    g.reservation_count(),
                    g.timer_count(),
                )
            });
        Some(Counts {
            connections,
            endpoints,
            routes,
            held_ports,
            reservations,
            timers,
            streams: stats
                .active_streams
                .load(std::sync::atomic::Ordering::Relaxed),
            listeners: stats
                .active_listeners
                .load(std::sync::atomic::Ordering::Relaxed),
            extra_tasks: probed.alive_tasks as isize - probed.baseline_tasks as isize,
            spill_buffers: probed.driver.spills.buffers(),
            spilled_on_disk: probed.driver.spills.on_disk(),
        })
    }

    /// The most bytes visitors had waiting on disk at once, as sampled by [`run_sampling`] after
    /// every step; 0 before the gateway started.
    pub fn peak_on_disk(&self) -> u64 {
        let guard = self.0.lock().unwrap();
        guard.as_ref().map_or(0, |p| p.peak_on_disk)
    }

    fn sample(&self) {
        if let Some(p) = self.0.lock().unwrap().as_mut() {
            p.peak_on_disk = p.peak_on_disk.max(p.driver.spills.on_disk());
        }
    }

    /// Whether a route for this Host is live now.
    pub fn routes_host(&self, host: &str) -> bool {
        let guard = self.0.lock().unwrap();
        guard
            .as_ref()
            .is_some_and(|p| p.driver.with_gateway(|g| g.route_by_host(host).is_some()))
    }
}

impl Probe {
    /// Whether a tcp endpoint routes this port now.
    pub fn routes_port(&self, port: u16) -> bool {
        let guard = self.0.lock().unwrap();
        guard
            .as_ref()
            .is_some_and(|p| p.driver.with_gateway(|g| g.route_by_port(port).is_some()))
    }
}

/// Files the server reads at start: its self-signed https certificate lands in `dir`.
pub struct StateDir(tempfile::TempDir);

impl StateDir {
    /// A fresh directory.
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("a temp dir can be made"))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Adds the gateway host: the real server started over [`SimNet`], the core's RNG and the host
/// key derived from `seed`, `clients` keys authorized.
pub fn add_gateway(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    settings: &GatewaySettings,
    clients: u64,
    state: &StateDir,
) -> Probe {
    let mut authorized = String::new();
    for index in 0..clients {
        let public = client_key(seed, index).public_key().to_openssh().unwrap();
        writeln!(authorized, "{public} client-{index}").unwrap();
    }
    let config = server_config(settings, state.path());
    let probe = Probe::default();
    let host_probe = probe.clone();
    sim.host(GATEWAY, move || {
        let (config, authorized, probe) = (config.clone(), authorized.clone(), host_probe.clone());
        async move {
            let keys = AuthorizedKeys::parse(Path::new("authorized_keys"), &authorized)?;
            let rng = Box::new(ChaCha20Rng::seed_from_u64(seed));
            let host_key = key_from(seed, 1);
            let running =
                tunnel_runtime::server::start(SimNet, &config, host_key, Some(&keys), rng).await?;
            // Let the listeners' tasks start before taking the baseline.
            tokio::task::yield_now().await;
            let metrics = tokio::runtime::Handle::current().metrics();
            let baseline = metrics.num_alive_tasks();
            *probe.0.lock().unwrap() = Some(Probed {
                driver: running.driver,
                baseline_tasks: baseline,
                alive_tasks: baseline,
                peak_on_disk: 0,
            });
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Some(p) = probe.0.lock().unwrap().as_mut() {
                    p.alive_tasks = metrics.num_alive_tasks();
                }
            }
        }
    });
    probe
}

fn server_config(settings: &GatewaySettings, state_dir: &Path) -> ServerConfig {
    let dir: PathBuf = state_dir.to_owned();
    let grace = format!("{}ms", settings.name_grace.as_millis());
    let interval = format!("{}ms", settings.keepalive_interval.as_millis());
    let max = settings.keepalive_max.to_string();
    let window = settings.channel_window.to_string();
    let spill_memory = settings.spill.memory_per_visitor().to_string();
    let spill_visitor = settings.spill.file_per_visitor().to_string();
    let spill_total = settings.spill.file_total().to_string();
    let dir_text = dir.to_string_lossy().into_owned();
    let mut config = ServerConfig::from_args([
        "tunnel-server",
        "--ssh-addr",
        "127.0.0.1:22",
        "--http-addr",
        "127.0.0.1:80",
        "--https-addr",
        "127.0.0.1:443",
        "--domain",
        DOMAIN,
        "--tcp-ports",
        "20000-20099",
        "--state-dir",
        &dir_text,
        "--name-grace",
        &grace,
        "--keepalive-interval",
        &interval,
        "--keepalive-max",
        &max,
        "--channel-window",
        &window,
        "--spill-memory-per-visitor",
        &spill_memory,
        "--spill-max-per-visitor",
        &spill_visitor,
        "--spill-max-total",
        &spill_total,
    ])
    .expect("the simulation's flags are valid");
    // turmoil hosts listen on the unspecified address (their own IP), not loopback; keys are
    // authorized explicitly, as a public server must.
    let any = std::net::IpAddr::from([0, 0, 0, 0]);
    config.ssh_addr.set_ip(any);
    config.http_addr.set_ip(any);
    config.https_addr.set_ip(any);
    config
}

/// Polls `condition` every 10 ms of simulated time until it holds or `limit` passes (the limit
/// only bounds a failure).
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the gateway holds nothing of any connection, then until the reservations have
/// expired too; on failure says what was left.
pub async fn check_nothing_left(probe: &Probe, settings: &GatewaySettings) -> Result<(), String> {
    let limit = settings.keepalive_budget() + Duration::from_secs(30);
    if !wait_until(limit, || {
        probe.counts().is_some_and(|c| c.connections_gone())
    })
    .await
    {
        return Err(format!(
            "left over after every client went: {:?}",
            probe.counts()
        ));
    }
    let limit = settings.name_grace + Duration::from_secs(5);
    if !wait_until(limit, || probe.counts().is_some_and(|c| c.all_gone())).await {
        return Err(format!(
            "left over after the name grace: {:?}",
            probe.counts()
        ));
    }
    Ok(())
}

/// Turns a turmoil run's outcome into the scenario's.
pub fn finish(outcome: turmoil::Result) -> Result<(), String> {
    outcome.map_err(|e| e.to_string())
}

/// Steps the simulation until every client host is done, sampling the gateway's spill after
/// every step (one tick of simulated time) for [`Probe::peak_on_disk`]. Within a step the
/// gateway runs until it waits, so what it holds between its own awaits is not seen.
pub fn run_sampling(sim: &mut turmoil::Sim<'_>, probe: &Probe) -> Result<(), String> {
    loop {
        let finished = sim.step().map_err(|e| e.to_string())?;
        probe.sample();
        if finished {
            return Ok(());
        }
    }
}

/// What only the loop outside the hosts can do to the world.
#[derive(Clone, Debug)]
pub enum Command {
    /// Kill a host's software (its sockets close as a dead process's would).
    Crash(String),
    /// Start a crashed host's software again.
    Bounce(String),
}

/// Commands the conductor queues for the stepping loop.
pub type Commands = Arc<Mutex<Vec<Command>>>;

/// Steps the simulation until every client host is done, carrying out queued commands.
pub fn run_with_commands(sim: &mut turmoil::Sim<'_>, commands: &Commands) -> Result<(), String> {
    loop {
        let finished = sim.step().map_err(|e| e.to_string())?;
        let queued: Vec<Command> = commands.lock().unwrap().drain(..).collect();
        for command in queued {
            match command {
                Command::Crash(host) => sim.crash(host.as_str()),
                Command::Bounce(host) => sim.bounce(host.as_str()),
            }
        }
        if finished {
            return Ok(());
        }
    }
}
