//! A tunnel client host: russh's client authenticates with its key, asks for forwards, runs the
//! command, reads its `Forwarding` lines and serves every `forwarded-tcpip` channel it accepts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use russh::client::{self, ChannelOpenHandle, Msg, Session};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, ChannelOpenFailure, Disconnect};

use crate::service;
use crate::world::{client_key, wait_until, GATEWAY, SSH_PORT};

/// What the client publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `http`: each forward is a name.
    Http,
    /// `tcp`: each forward is a port the server picks.
    Tcp,
}

/// One client: who it is and how it behaves.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    /// The turmoil host name.
    pub host: String,
    /// The identity its services answer with.
    pub owner: String,
    /// The run seed and the key's index (clients sharing an index share a key).
    pub seed: u64,
    pub key: u64,
    pub kind: Kind,
    /// One entry per forward: for http the name asked for (`None`: a random one).
    pub names: Vec<Option<String>>,
    /// The client's own keepalive interval (3 unanswered end the connection).
    pub keepalive: Option<Duration>,
    /// Whether it connects again after losing the connection.
    pub reconnect: bool,
    /// The share of channel opens it refuses.
    pub refuse_rate: f64,
    /// How long after boot it first connects.
    pub start_delay: Duration,
    /// Names given later by the conductor: the client waits for them, then uses them instead
    /// of `names`.
    pub deferred: Option<Deferred>,
}

/// Forwards a client learns only once the conductor knows them.
pub type Deferred = Arc<Mutex<Option<Vec<Option<String>>>>>;

impl ClientSpec {
    /// An http client asking for `names`.
    pub fn http(seed: u64, index: u64, names: Vec<Option<String>>) -> Self {
        Self {
            host: format!("client-{index}"),
            owner: format!("client-{index}"),
            seed,
            key: index,
            kind: Kind::Http,
            names,
            keepalive: Some(Duration::from_secs(2)),
            reconnect: false,
            refuse_rate: 0.0,
            start_delay: Duration::ZERO,
            deferred: None,
        }
    }

    /// A tcp client with `forwards` server-picked ports.
    pub fn tcp(seed: u64, index: u64, forwards: usize) -> Self {
        Self {
            kind: Kind::Tcp,
            names: vec![None; forwards],
            ..Self::http(seed, index, Vec::new())
        }
    }
}

/// What a client has seen, shared with the scenario's conductor.
#[derive(Debug, Default)]
pub struct ClientState {
    /// Sessions that got every Forwarding line.
    pub sessions: u64,
    /// Whether the current session has all its endpoints.
    pub live: bool,
    /// The current session's public URLs, in the order of the forwards.
    pub urls: Vec<String>,
    /// Every stderr line, over all sessions.
    pub stderr: Vec<String>,
    /// Exit statuses received.
    pub exits: Vec<u32>,
    /// Service channels open now.
    pub open_channels: usize,
    pub accepted: usize,
    pub refused: usize,
    /// Bytes each download has handed to its channel.
    pub download_written: HashMap<u64, u64>,
    /// Things that must never happen (a channel for a forward it never asked for).
    pub violations: Vec<String>,
    /// Set by the conductor: disconnect and stay away.
    pub stop: bool,
    /// tcpip-forward requests the server refused.
    pub forward_refusals: u64,
    /// Connection attempts (including failed ones).
    pub attempts: u64,
    /// How each session ended.
    pub endings: Vec<String>,
}

/// A client's state behind a lock (held only briefly, never across `.await`).
pub type Shared = Arc<Mutex<ClientState>>;

/// Adds the client as a turmoil host (so it can be crashed and bounced).
pub fn add_client(sim: &mut turmoil::Sim<'_>, spec: ClientSpec) -> Shared {
    let state = Shared::default();
    let host_state = state.clone();
    let host = spec.host.clone();
    sim.host(host.as_str(), move || {
        let (spec, state) = (spec.clone(), host_state.clone());
        async move {
            let mut rng = ChaCha20Rng::seed_from_u64(spec.seed ^ fnv(&spec.host));
            // A crash dropped the service tasks with their counts.
            state.lock().unwrap().open_channels = 0;
            tokio::time::sleep(spec.start_delay).await;
            let mut spec = spec;
            if let Some(deferred) = spec.deferred.clone() {
                wait_until(Duration::from_secs(600), || {
                    deferred.lock().unwrap().is_some()
                })
                .await;
                spec.names = deferred.lock().unwrap().clone().unwrap_or_default();
            }
            loop {
                if state.lock().unwrap().stop {
                    break;
                }
                state.lock().unwrap().attempts += 1;
                let ending = match run_session(&spec, &state, &mut rng).await {
                    Ok(()) => "ended".to_owned(),
                    Err(e) => e,
                };
                {
                    let mut s = state.lock().unwrap();
                    s.live = false;
                    s.urls.clear();
                    s.endings.push(ending);
                }
                // Refused before the gateway listens: try again, as any client would.
                let never_connected = state
                    .lock()
                    .unwrap()
                    .endings
                    .iter()
                    .all(|e| e.starts_with("connect"));
                if !spec.reconnect && !never_connected {
                    break;
                }
                let backoff = rng.gen_range(200..1000);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    state
}

async fn run_session(
    spec: &ClientSpec,
    state: &Shared,
    rng: &mut ChaCha20Rng,
) -> Result<(), String> {
    let stream = tokio::time::timeout(
        Duration::from_secs(3),
        turmoil::net::TcpStream::connect((GATEWAY, SSH_PORT)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))?;
    let config = client::Config {
        keepalive_interval: spec.keepalive,
        keepalive_max: 3,
        inactivity_timeout: None,
        ..client::Config::default()
    };
    let handler = ClientHandler {
        spec: spec.clone(),
        state: state.clone(),
        rng: ChaCha20Rng::seed_from_u64(rng.gen()),
        forwards: Arc::new(Mutex::new(Vec::new())),
    };
    let forwards = handler.forwards.clone();
    let mut handle = tokio::time::timeout(
        Duration::from_secs(10),
        client::connect_stream(Arc::new(config), stream, handler),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    let key = client_key(spec.seed, spec.key);
    let auth = handle
        .authenticate_publickey("v2", PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await
        .map_err(|e| format!("auth: {e}"))?;
    if !auth.success() {
        return Err("auth refused".to_owned());
    }
    for (i, name) in spec.names.iter().enumerate() {
        // Port-0 forwards get distinct bind addresses: the core refuses a second
        // ("localhost", 0) on one connection as a duplicate (reported; see the sim README).
        let (address, port) = match (spec.kind, name) {
            (Kind::Http, Some(name)) => (name.clone(), 80),
            (Kind::Http, None) => ("localhost".to_owned(), 80),
            (Kind::Tcp, Some(port)) => ("localhost".to_owned(), port.parse().unwrap_or(0)),
            (Kind::Tcp, _) if i == 0 => ("localhost".to_owned(), 0),
            (Kind::Tcp, _) => (format!("127.0.0.{i}"), 0),
        };
        // Like OpenSSH without ExitOnForwardFailure: note the refusal and carry on.
        match handle.tcpip_forward(address.clone(), port).await {
            Ok(known) => {
                let known = if port == 0 { known } else { port };
                forwards.lock().unwrap().push((address, known));
            }
            Err(russh::Error::RequestDenied) => state.lock().unwrap().forward_refusals += 1,
            Err(e) => return Err(format!("tcpip-forward {address}:{port}: {e}")),
        }
    }
    let mut session = handle
        .channel_open_session()
        .await
        .map_err(|e| format!("session: {e}"))?;
    let command = match spec.kind {
        Kind::Http => "http",
        Kind::Tcp => "tcp",
    };
    session
        .exec(true, command)
        .await
        .map_err(|e| format!("exec: {e}"))?;

    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut urls = Vec::new();
    let mut stop_check = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            message = session.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    stdout.extend_from_slice(&data);
                    for line in take_lines(&mut stdout) {
                        if let Some(url) = forwarding_url(&line) {
                            urls.push(url);
                            if urls.len() == spec.names.len() {
                                let mut s = state.lock().unwrap();
                                s.urls = urls.clone();
                                s.live = true;
                                s.sessions += 1;
                            }
                        }
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    stderr.extend_from_slice(&data);
                    let lines = take_lines(&mut stderr);
                    state.lock().unwrap().stderr.extend(lines);
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    state.lock().unwrap().exits.push(exit_status);
                }
                Some(_) => {}
                None => return Err("session channel ended".to_owned()),
            },
            _ = stop_check.tick() => {
                if state.lock().unwrap().stop {
                    let _ = handle
                        .disconnect(Disconnect::ByApplication, "bye", "en")
                        .await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut handle).await;
                    return Ok(());
                }
            }
        }
    }
}

/// Complete lines taken off the front of `buf`.
fn take_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=pos).collect();
        lines.push(String::from_utf8_lossy(&line).trim_end().to_owned());
    }
    lines
}

/// The URL of a `Forwarding <URL> -> <BIND>:<PORT>` line.
fn forwarding_url(line: &str) -> Option<String> {
    let rest = line.strip_prefix("Forwarding ")?;
    Some(rest.split(" -> ").next()?.to_owned())
}

/// The Host header for an http URL (`http://name.domain[:port]`).
pub fn url_host(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split(['/', ':']).next().unwrap_or(rest).to_owned()
}

/// The port of a `tcp://domain:port` URL.
pub fn url_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

struct ClientHandler {
    spec: ClientSpec,
    state: Shared,
    rng: ChaCha20Rng,
    /// The (bind address, port) of each forward this connection asked for.
    forwards: Arc<Mutex<Vec<(String, u32)>>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ours = self
            .forwards
            .lock()
            .unwrap()
            .iter()
            .any(|(a, p)| a == connected_address && *p == connected_port);
        if !ours {
            self.state.lock().unwrap().violations.push(format!(
                "{} got a channel for {connected_address}:{connected_port}, which it never forwarded",
                self.spec.owner
            ));
        }
        if self.spec.refuse_rate > 0.0 && self.rng.gen_bool(self.spec.refuse_rate) {
            self.state.lock().unwrap().refused += 1;
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        }
        reply.accept().await;
        {
            let mut s = self.state.lock().unwrap();
            s.accepted += 1;
            s.open_channels += 1;
        }
        let (owner, state, kind) = (self.spec.owner.clone(), self.state.clone(), self.spec.kind);
        tokio::spawn(async move {
            let stream = channel.into_stream();
            let _ = match kind {
                Kind::Http => service::serve_http(stream, &owner).await,
                Kind::Tcp => service::serve_tcp(stream, &owner, &state).await,
            };
            state.lock().unwrap().open_channels -= 1;
        });
        Ok(())
    }
}

fn fnv(text: &str) -> u64 {
    service::fnv1a(text.as_bytes())
}

/// Asks every client to disconnect and waits until each session has ended.
pub async fn stop_all(clients: &[Shared]) -> Result<(), String> {
    for c in clients {
        c.lock().unwrap().stop = true;
    }
    let done = wait_until(Duration::from_secs(20), || {
        clients.iter().all(|c| {
            let s = c.lock().unwrap();
            !s.live && s.open_channels == 0
        })
    })
    .await;
    if done {
        Ok(())
    } else {
        Err("a client did not stop".to_owned())
    }
}

/// Every violation any client recorded.
pub fn violations(clients: &[Shared]) -> Vec<String> {
    clients
        .iter()
        .flat_map(|c| c.lock().unwrap().violations.clone())
        .collect()
}
