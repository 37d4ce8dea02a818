//! Assembles a running server from its configuration: listeners, the core, the SSH front door.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand_core::RngCore;
use russh::keys::PrivateKey;
use russh::{cipher, Preferred};
use tokio::task::AbortHandle;
use tunnel_core::{Gateway, GatewayConfig, Limits};

use crate::config::ServerConfig;
use crate::driver::{Driver, DriverSettings};
use crate::keys::AuthorizedKeys;
use crate::net::{Listener, Net};
use crate::socket_activation::Inherited;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The https certificate.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// An `authorized_keys` option the server cannot honour.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    /// The admin listener's token file.
    #[error("cannot use {} as the admin token file: {problem}", path.display())]
    AdminToken {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The spill directory.
    #[error("cannot use {} for spill files: {source}", dir.display())]
    SpillDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// A listener that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}: {source}")]
pub struct BindError {
    what: &'static str,
    addr: SocketAddr,
    source: io::Error,
}

/// A started server: its driver and the addresses it really bound.
pub struct Running<N: Net> {
    /// The core and its executor.
    pub driver: Arc<Driver<N>>,
    /// The SSH listener.
    pub ssh_addr: SocketAddr,
    /// The HTTP listener.
    pub http_addr: SocketAddr,
    /// The HTTPS listener.
    pub https_addr: SocketAddr,
    /// The admin listener, with `--admin-addr`.
    pub admin_addr: Option<SocketAddr>,
    /// With `--authorized-keys`: notify it to re-read the file at once (SIGHUP); the file is
    /// also re-read by itself when it changes.
    pub reload_keys: Option<Arc<tokio::sync::Notify>>,
    state_dir: PathBuf,
    /// What the core's config was built with that a reconfiguration keeps.
    home: Home,
    admin_token: crate::admin::SharedToken,
    /// The accept loops of the ssh, http and https listeners.
    accepting: Vec<AbortHandle>,
}

/// How long a stop waits for the SSH connections to close once told to.
const CLOSE_BOUND: Duration = Duration::from_secs(2);
/// How often a stop looks whether what it waits for is done.
const STOP_POLL: Duration = Duration::from_millis(20);

impl<N: Net> Running<N> {
    /// Stops the server without losing anything: the listeners stop accepting, every session is
    /// told (`server restarting`), the visitors in flight get up to `grace` to finish, then every
    /// connection is closed and the holdings are saved for the next start.
    pub async fn stop(&self, grace: Duration) {
        for task in &self.accepting {
            task.abort();
        }
        self.driver.begin_stop().await;
        let streams = || self.driver.stats.active_streams.load(Ordering::Relaxed);
        tracing::info!(
            "stopping: up to {grace:?} for {} visitor streams to finish",
            streams()
        );
        let deadline = tokio::time::Instant::now() + grace;
        while streams() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(STOP_POLL).await;
        }
        self.driver.end_stop().await;
        let deadline = tokio::time::Instant::now() + CLOSE_BOUND;
        while self.driver.with_gateway(Gateway::connection_count) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(STOP_POLL).await;
        }
        self.save_holdings().await;
    }

    /// Reconfigures the running server from `config`, read again (SIGHUP): what can change
    /// live does, for what starts from now on (see [`crate::config::Reload`] for which
    /// settings), and nobody is disconnected. The `--admin-keys` and `--admin-token-file` files
    /// are read again. A file that cannot be read leaves everything as it was.
    pub async fn reconfigure(&self, config: &ServerConfig) -> Result<(), StartError> {
        let core = gateway_config(config, &self.home)?;
        let token = config
            .admin_token_file
            .as_deref()
            .map(read_admin_token)
            .transpose()?;
        let running = self.driver.settings();
        let settings = DriverSettings {
            // Where tcp listeners bind, where spills go and how metrics are labelled are set
            // at start.
            tcp_bind_ip: running.tcp_bind_ip,
            spill_dir: running.spill_dir.clone(),
            metrics_per_endpoint: running.metrics_per_endpoint,
            ..driver_settings(config, running.tcp_bind_ip)
        };
        *self.admin_token.write().unwrap_or_else(|p| p.into_inner()) = token;
        self.driver.reconfigure(core, settings).await;
        if let Some(path) = &config.admin_token_file {
            tracing::info!("the admin token was read again from {}", path.display());
        }
        if let Some(path) = &config.admin_keys {
            tracing::info!("the admin keys were read again from {}", path.display());
        }
        Ok(())
    }

    /// Writes the holdings file now (at shutdown: changes of the last moment would otherwise
    /// wait for the next save).
    pub async fn save_holdings(&self) {
        let path = self.state_dir.join(crate::holdings_file::HOLDINGS_FILE);
        crate::holdings_file::save(&self.driver, &path, None).await;
    }
}

/// Binds every listener, logs one line per listener with its real address, and spawns the
/// tasks that serve them. `rng` seeds the core's names.
pub async fn start<N: Net>(
    net: N,
    config: &ServerConfig,
    host_key: PrivateKey,
    authorized: Option<&AuthorizedKeys>,
    rng: Box<dyn RngCore + Send>,
) -> Result<Running<N>, StartError> {
    start_inheriting(net, config, host_key, authorized, rng, Inherited::none()).await
}

/// [`start`], serving the listeners passed in (systemd socket activation) where one matches a
/// listener of the server, by name (`ssh`, `http`, `https`) or address; the rest are bound here.
pub async fn start_inheriting<N: Net>(
    net: N,
    config: &ServerConfig,
    host_key: PrivateKey,
    authorized: Option<&AuthorizedKeys>,
    rng: Box<dyn RngCore + Send>,
    mut inherited: Inherited,
) -> Result<Running<N>, StartError> {
    // Before anything is written or bound: a bad token file is a configuration error.
    let admin_token = config
        .admin_token_file
        .as_deref()
        .map(read_admin_token)
        .transpose()?;
    let admin_token = Arc::new(std::sync::RwLock::new(admin_token));
    let (tls, certs) = crate::tls::server_config(config)?;
    if let Some(dir) = crate::state_file::writable_by_others(&config.state_dir) {
        tracing::warn!(
            "the state dir {} is writable by others than its owner: they could replace the host key or the certificate",
            dir.display()
        );
    }
    let ssh = bind(&net, &mut inherited, "ssh", config.ssh_addr).await?;
    let http = bind(&net, &mut inherited, "http", config.http_addr).await?;
    let https = bind(&net, &mut inherited, "https", config.https_addr).await?;
    let admin = match config.admin_addr {
        Some(addr) => Some(bind(&net, &mut inherited, "admin", addr).await?),
        None => None,
    };
    let admin_addr = admin
        .as_ref()
        .zip(config.admin_addr)
        .map(|(listener, asked)| local(listener, asked));
    let leftover = inherited.leftover();
    if !leftover.is_empty() {
        tracing::warn!(
            "passed-in listeners that match no listener of the server (by name ssh, http, https, or address): {}",
            leftover.join(", ")
        );
    }
    let (ssh_addr, http_addr, https_addr) = (
        local(&ssh, config.ssh_addr),
        local(&http, config.http_addr),
        local(&https, config.https_addr),
    );

    // Only a path names the file in errors; a caller may hand in keys read from elsewhere.
    let keys_path = config
        .authorized_keys
        .clone()
        .unwrap_or_else(|| "authorized_keys".into());
    let key_list = authorized
        .map(|keys| keys.key_list(&keys_path))
        .transpose()?;
    let home = Home {
        http_port: http_addr.port(),
        https_port: https_addr.port(),
        ssh_port: ssh_addr.port(),
        host_key: crate::keys::fingerprint(host_key.public_key()),
    };
    let core = gateway_config(config, &home)?;
    let core = match key_list {
        Some(list) => core.with_key_list(list),
        None => core.with_authorized_keys(None),
    };
    prepare_spill_dir(config)?;
    let settings = driver_settings(config, ssh_addr.ip());
    let mut gateway = Gateway::new(core, rng);
    crate::holdings_file::restore(&mut gateway, &config.state_dir);
    let driver = Driver::new(gateway, net, settings);
    if let Some(keys) = authorized {
        driver.set_key_comments(keys);
    }

    tokio::spawn(Arc::clone(&driver).run_timers());
    let reload_keys = config.authorized_keys.as_ref().map(|path| {
        let reload = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(crate::key_watch::watch(
            Arc::clone(&driver),
            path.clone(),
            config.authorized_keys_poll,
            Arc::clone(&reload),
        ));
        reload
    });
    tokio::spawn(crate::holdings_file::keep(
        Arc::clone(&driver),
        config.state_dir.clone(),
    ));
    let mut accepting = vec![
        tokio::spawn(crate::ssh::serve(
            Arc::clone(&driver),
            ssh,
            Arc::new(ssh_config(config, host_key)),
        ))
        .abort_handle(),
        tokio::spawn(crate::http::serve(Arc::clone(&driver), http)).abort_handle(),
        tokio::spawn(crate::https::serve(Arc::clone(&driver), https, tls, certs)).abort_handle(),
    ];
    if let Some(admin) = admin {
        let serving = crate::admin::serve(Arc::clone(&driver), admin, Arc::clone(&admin_token));
        accepting.push(tokio::spawn(serving).abort_handle());
    }
    Ok(Running {
        driver,
        home,
        admin_token,
        state_dir: config.state_dir.clone(),
        accepting,
        ssh_addr,
        http_addr,
        https_addr,
        admin_addr,
        reload_keys,
    })
}

/// What the core's configuration takes from the listeners as bound and the host key: fixed
/// for the server's life.
struct Home {
    http_port: u16,
    https_port: u16,
    ssh_port: u16,
    host_key: String,
}

/// The core's configuration from the server's, without the authorized keys (those come from
/// their own file, at start and when it changes); reads the `--admin-keys` file.
fn gateway_config(config: &ServerConfig, home: &Home) -> Result<GatewayConfig, StartError> {
    let limits = Limits::default()
        .with_endpoints_per_connection(config.max_endpoints_per_connection)
        .with_connections_per_key(config.max_connections_per_key)
        .with_unauthenticated_per_ip(config.max_unauthenticated_per_ip)
        .with_visitors_per_endpoint(config.max_visitors_per_endpoint)
        .with_startups(config.max_startups)
        .with_visitors_per_source(config.max_visitors_per_source)
        .with_visitors_total(config.max_visitors)
        .with_visitor_connections_per_source(config.max_visitor_connections_per_source)
        .with_names_per_key(config.max_names_per_key)
        .with_tcp_ports_per_key(config.max_tcp_ports_per_key);
    let core = GatewayConfig::new(config.domain.clone(), home.http_port, home.https_port)
        .with_tcp_ports(config.tcp_ports.clone())
        .with_name_grace(config.name_grace)
        .with_auth_timeout(config.auth_timeout)
        .with_limits(limits)
        .with_spill_limits(config.spill)
        .with_home(home.ssh_port, home.host_key.clone());
    let core = match &config.admin_keys {
        Some(path) => core.with_admin_keys(
            crate::keys::load_authorized_keys(path)?
                .fingerprints()
                .map(tunnel_core::KeyFingerprint::new)
                .collect(),
        ),
        None => core,
    };
    Ok(config.key_quotas.iter().fold(core, |core, (key, quota)| {
        core.with_key_quota(key.clone(), *quota)
    }))
}

/// The runtime's own settings from the server's; tcp endpoints listen on `tcp_bind_ip`.
fn driver_settings(config: &ServerConfig, tcp_bind_ip: std::net::IpAddr) -> DriverSettings {
    DriverSettings {
        tcp_bind_ip,
        http_header_timeout: config.http_header_timeout,
        http_idle_timeout: config.http_idle_timeout,
        tls_hello_timeout: config.tls_hello_timeout,
        channel_open_timeout: config.channel_open_timeout,
        close_grace: config.close_grace,
        spill_dir: config.spill_dir.clone(),
        trusted_proxies: tunnel_core::TrustedProxies::new(config.trusted_proxies.clone())
            .with_proxy_protocol(config.accept_proxy_proto),
        access_log: config.access_log,
        metrics_per_endpoint: config.metrics_per_endpoint,
    }
}

/// The admin token: the file's content, trimmed; an empty file is refused (it would admit an
/// empty bearer token).
fn read_admin_token(path: &std::path::Path) -> Result<crate::admin::AdminToken, StartError> {
    let failed = |problem: String| StartError::AdminToken {
        path: path.to_owned(),
        problem,
    };
    let content = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    crate::admin::AdminToken::from_file_content(&content)
        .ok_or_else(|| failed("it is empty".to_owned()))
}

/// Creates the spill directory (owner only: it holds visitors' data) and logs the caps beside the
/// free space found there.
fn prepare_spill_dir(config: &ServerConfig) -> Result<(), StartError> {
    let dir = &config.spill_dir;
    let failed = |source| StartError::SpillDir {
        dir: dir.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    let free = rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map_err(|e| failed(e.into()))?;
    let limits = config.spill;
    tracing::info!(
        "spilling slow visitors' data under {}: {} in memory and {} on disk per visitor, {} on disk in all ({} free there)",
        dir.display(),
        bytes(limits.memory_per_visitor()),
        bytes(limits.file_per_visitor()),
        bytes(limits.file_total()),
        bytes(free),
    );
    if free < limits.file_total() {
        tracing::warn!(
            "the spill cap of {} is more than the {} free under {}: the disk fills before the cap cuts anyone",
            bytes(limits.file_total()),
            bytes(free),
            dir.display()
        );
    }
    Ok(())
}

/// A byte count as an operator reads it.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

async fn bind<N: Net>(
    net: &N,
    inherited: &mut Inherited,
    what: &'static str,
    addr: SocketAddr,
) -> Result<N::Listener, BindError> {
    let failed = |source| BindError { what, addr, source };
    let listener = match inherited.take(what, addr) {
        Some(passed) => {
            tracing::info!("serving the {what} listener passed in by the service manager");
            net.adopt(passed).map_err(failed)?
        }
        None => net.bind(addr).await.map_err(failed)?,
    };
    tracing::info!("listening {what} on {}", local(&listener, addr));
    Ok(listener)
}

fn local<L: Listener>(listener: &L, asked: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(asked)
}

/// The SSH server settings: public-key auth only, AES-GCM offered beside ChaCha20-Poly1305
/// (AES-GCM is the cheapest AEAD on CPUs with AES-NI), large windows, keepalives instead of an
/// idle cut-off (quiet tunnels are normal).
fn ssh_config(config: &ServerConfig, host_key: PrivateKey) -> russh::server::Config {
    /// OpenSSH's own channel packet size (CHAN_TCP_PACKET_DEFAULT).
    const MAX_PACKET: u32 = 32 * 1024;
    const CIPHERS: &[cipher::Name] = &[
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
        cipher::CHACHA20_POLY1305,
    ];
    russh::server::Config {
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        window_size: config.channel_window,
        // russh queues a channel's incoming packets and stops reading the connection when the
        // queue is full (it grants window on arrival, not on consumption). Each channel's drain
        // task empties it as packets arrive (channel_io.rs); one window's worth of room covers
        // a burst before the task runs.
        channel_buffer_size: (config.channel_window / MAX_PACKET).max(8) as usize,
        maximum_packet_size: MAX_PACKET,
        // Quiet tunnels are normal, so no idle cut-off of our own; but after a disconnect russh
        // waits for the peer's EOF bounded only by this, and keepalive replies count as activity.
        inactivity_timeout: config
            .keepalive_interval
            .map(|interval| interval * (config.keepalive_max as u32 + 2)),
        keepalive_interval: config.keepalive_interval,
        keepalive_max: config.keepalive_max,
        nodelay: true,
        preferred: Preferred {
            cipher: Cow::Borrowed(CIPHERS),
            ..Preferred::default()
        },
        ..russh::server::Config::default()
    }
}
