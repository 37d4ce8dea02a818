//! Executes what the core decides. The [`Gateway`] sits in a mutex held only around one
//! `handle` plus the drain of its actions (never across an `.await`); actions are then carried
//! out without the lock: listeners bound and dropped, lines and exit statuses sent to sessions.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use russh::server::Handle;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tunnel_core::{
    Action, Address, ConnId, EndpointId, Gateway, Input, OutputStream, Reply, RequestId, Route,
};

use crate::net::Net;

/// What the adapter needs besides the core's decisions.
#[derive(Clone, Debug)]
pub struct DriverSettings {
    /// The address tcp endpoint listeners bind on.
    pub tcp_bind_ip: IpAddr,
    /// How long a `forwarded-tcpip` channel open may take before the visitor is dropped.
    pub channel_open_timeout: Duration,
    /// After a session's exit status, how long the client gets to hang up before we do.
    pub close_grace: Duration,
}

/// A message for one connection's outbox task, which owns the writes to its session channel.
#[derive(Debug)]
pub enum Outgoing {
    /// The session channel opened; `pty` when the client asked for a terminal (lines end CRLF).
    Session {
        /// The channel.
        channel: russh::ChannelId,
        /// Whether a pty was requested.
        pty: bool,
    },
    /// One line for stdout or stderr.
    Print(OutputStream, String),
    /// The exit status.
    Exit(u32),
    /// End the session and the connection with this disconnect message.
    Close(String),
}

/// Room for lines per connection before new ones are dropped (a client that stopped reading must
/// not make the server buffer without bound).
pub const OUTBOX_CAPACITY: usize = 1024;

struct ConnLink {
    handle: Option<Handle>,
    outbox: mpsc::Sender<Outgoing>,
    /// Dropped with the link when the connection ends, which ends every visitor stream on it.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

/// Resolves when a connection ends. Visitor streams wait on it beside their copy, because a
/// russh channel writer can stay pending for good once its connection is gone.
#[derive(Clone, Debug)]
pub struct ConnectionGone(watch::Receiver<()>);

impl ConnectionGone {
    /// Waits until the connection has ended.
    pub async fn wait(mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

enum ListenerSlot<L> {
    /// Bound, not accepting yet: until its route is live, visitors wait in the kernel's backlog
    /// (their connect succeeds) for the command to say what the endpoint is.
    Bound(L),
    /// Accepting visitors; `closed` completes once the task, and so the listener, is dropped.
    Running {
        task: AbortHandle,
        closed: oneshot::Receiver<()>,
    },
}

struct State<L> {
    gateway: Gateway,
    conns: HashMap<ConnId, ConnLink>,
    listeners: HashMap<EndpointId, ListenerSlot<L>>,
    /// Ports whose listener was unbound but may not be closed yet: an abort is asynchronous, and
    /// the next bind of the port (a takeover, a reconnect) must wait for it.
    closing: HashMap<u16, oneshot::Receiver<()>>,
    /// One per live route: the endpoint's visitor limit.
    visitor_permits: HashMap<EndpointId, Arc<Semaphore>>,
}

/// Where a visitor goes: the route, the connection to open the channel on, and a permit that
/// counts it against the endpoint's visitor limit for as long as it is held.
pub struct Target {
    /// The route.
    pub route: Arc<Route>,
    /// The SSH connection's handle.
    pub handle: Handle,
    /// Held while the visitor is served.
    pub permit: OwnedSemaphorePermit,
    /// Resolves when the SSH connection ends.
    pub gone: ConnectionGone,
}

/// Why a visitor cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTarget {
    /// No live route for it.
    Unknown,
    /// The endpoint is serving as many visitors as it may.
    Busy,
}

/// What a handler call gets back synchronously.
#[derive(Debug, Default)]
pub struct Answers {
    /// The auth decision, for `AuthRequested`.
    pub auth: Option<bool>,
    /// The session channel decision, for `SessionRequested`.
    pub session: Option<bool>,
    /// Replies to global requests.
    pub replies: Vec<(RequestId, Reply)>,
    /// Whether the core closed the connection (for `ConnectionOpened`).
    pub closed: bool,
}

impl Answers {
    /// The reply to `request`; a missing one is a refusal.
    pub fn reply(&self, request: RequestId) -> Reply {
        self.replies
            .iter()
            .find(|(r, _)| *r == request)
            .map_or(Reply::Refused, |(_, reply)| *reply)
    }
}

/// Counters for leak checks in tests and simulations.
#[derive(Debug, Default)]
pub struct Stats {
    /// Visitor streams being piped.
    pub active_streams: AtomicUsize,
    /// Tcp endpoint listeners running.
    pub active_listeners: AtomicUsize,
}

/// The running gateway: core state plus the links to connections and listeners.
pub struct Driver<N: Net> {
    state: Mutex<State<N::Listener>>,
    net: N,
    settings: DriverSettings,
    timer_changed: Notify,
    /// Leak-check counters.
    pub stats: Stats,
}

/// Current time for the core: tokio's clock, so simulations run on simulated time.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl<N: Net> Driver<N> {
    /// Wraps a gateway.
    pub fn new(gateway: Gateway, net: N, settings: DriverSettings) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                gateway,
                conns: HashMap::new(),
                listeners: HashMap::new(),
                closing: HashMap::new(),
                visitor_permits: HashMap::new(),
            }),
            net,
            settings,
            timer_changed: Notify::new(),
            stats: Stats::default(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &DriverSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, State<N::Listener>> {
        // A panic while holding the lock is a bug already reported; the state stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the core (routing queries, counts) under the lock.
    pub fn with_gateway<T>(&self, f: impl FnOnce(&Gateway) -> T) -> T {
        f(&self.lock().gateway)
    }

    /// Registers a new connection's outbox before any input names it.
    pub fn register(&self, conn: ConnId, outbox: mpsc::Sender<Outgoing>) {
        let (alive_tx, alive) = watch::channel(());
        self.lock().conns.insert(
            conn,
            ConnLink {
                handle: None,
                outbox,
                _alive: alive_tx,
                alive,
            },
        );
    }

    /// Records the connection's russh handle once its session runs.
    pub fn set_handle(&self, conn: ConnId, handle: Handle) {
        if let Some(link) = self.lock().conns.get_mut(&conn) {
            link.handle = Some(handle);
        }
    }

    /// Queues a message for a connection's outbox.
    pub fn send_outgoing(&self, conn: ConnId, message: Outgoing) {
        self.lock().outgoing(conn, message);
    }

    /// The visitor target for a tcp port.
    pub fn target_by_port(&self, port: u16) -> Result<Target, NoTarget> {
        let state = self.lock();
        let route = state.gateway.route_by_port(port).ok_or(NoTarget::Unknown)?;
        state.target(route)
    }

    /// The visitor target for a Host header or SNI name.
    pub fn target_by_host(&self, host: &str) -> Result<Target, NoTarget> {
        let state = self.lock();
        let route = state.gateway.route_by_host(host).ok_or(NoTarget::Unknown)?;
        state.target(route)
    }

    /// Feeds one input, carries out what follows, and returns the answers the calling handler
    /// must give. Listeners are bound here, before returning, so that a forward's reply names a
    /// port the host really gave us (the core answers once the bind is reported).
    pub async fn submit(self: &Arc<Self>, input: Input) -> Answers {
        let mut answers = Answers::default();
        if let Input::ConnectionClosed { conn } = &input {
            self.lock().conns.remove(conn);
        }
        self.run(|gateway| gateway.handle(now(), input), &mut answers)
            .await;
        answers
    }

    /// Runs the core's deadlines for as long as the driver lives.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.lock().gateway.poll_timeout();
            match next {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.timer_changed.notified() => continue,
                    }
                }
                None => {
                    self.timer_changed.notified().await;
                    continue;
                }
            }
            let mut answers = Answers::default();
            self.run(|gateway| gateway.handle_timeout(now()), &mut answers)
                .await;
        }
    }

    /// One mutation of the core, then its actions carried out, binds answered in order until the
    /// core asks for nothing more.
    async fn run(self: &Arc<Self>, mutate: impl FnOnce(&mut Gateway), answers: &mut Answers) {
        let mut binds = {
            let mut state = self.lock();
            mutate(&mut state.gateway);
            let actions = drain(&mut state.gateway);
            self.execute(&mut state, actions, answers)
        };
        while !binds.is_empty() {
            let (endpoint, port) = binds.remove(0);
            let outcome = self.bind(endpoint, port).await;
            let mut state = self.lock();
            state.gateway.handle(now(), outcome);
            let actions = drain(&mut state.gateway);
            binds.extend(self.execute(&mut state, actions, answers));
        }
        self.timer_changed.notify_one();
    }

    /// Carries out actions under the lock (none of them waits); returns the binds to perform.
    fn execute(
        self: &Arc<Self>,
        state: &mut State<N::Listener>,
        actions: Vec<Action>,
        answers: &mut Answers,
    ) -> Vec<(EndpointId, u16)> {
        let mut binds = Vec::new();
        for action in actions {
            match action {
                Action::Auth { accepted, .. } => answers.auth = Some(accepted),
                Action::SessionAnswer { accepted, .. } => answers.session = Some(accepted),
                Action::Reply { request, reply, .. } => answers.replies.push((request, reply)),
                Action::Bind { endpoint, port } => binds.push((endpoint, port)),
                Action::Unbind { endpoint, port } => {
                    // A listener not accepting yet closes here; a running one when its task goes.
                    if let Some(ListenerSlot::Running { task, closed }) =
                        state.listeners.remove(&endpoint)
                    {
                        task.abort();
                        state.closing.insert(port, closed);
                    }
                }
                Action::RouteAdded(route) => {
                    tracing::debug!(endpoint = %route.endpoint, conn = %route.conn, "route added");
                    state.visitor_permits.insert(
                        route.endpoint,
                        Arc::new(Semaphore::new(route.visitor_limit())),
                    );
                    if let Address::Port(port) = route.address {
                        if let Some(ListenerSlot::Bound(listener)) =
                            state.listeners.remove(&route.endpoint)
                        {
                            let (closed_tx, closed) = oneshot::channel();
                            let task = tokio::spawn(crate::tcp::serve_listener(
                                Arc::clone(self),
                                listener,
                                port,
                                closed_tx,
                            ));
                            let task = task.abort_handle();
                            state
                                .listeners
                                .insert(route.endpoint, ListenerSlot::Running { task, closed });
                        }
                    }
                }
                Action::RouteRemoved(endpoint) => {
                    tracing::debug!(%endpoint, "route removed");
                    state.visitor_permits.remove(&endpoint);
                }
                Action::Print { conn, stream, line } => {
                    state.outgoing(conn, Outgoing::Print(stream, line));
                }
                Action::Exit { conn, status } => state.outgoing(conn, Outgoing::Exit(status)),
                Action::Close { conn, message } => {
                    answers.closed = true;
                    state.outgoing(conn, Outgoing::Close(message));
                }
                other => tracing::warn!(?other, "action not understood by this runtime"),
            }
        }
        binds
    }

    /// Binds a tcp endpoint's listener; the result is the core's next input.
    async fn bind(&self, endpoint: EndpointId, port: u16) -> Input {
        let closing = self.lock().closing.remove(&port);
        if let Some(closed) = closing {
            // Resolves when the old accept task is dropped; the bound only guards against a bug.
            let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
        }
        let addr = SocketAddr::new(self.settings.tcp_bind_ip, port);
        match self.net.bind(addr).await {
            Ok(listener) => {
                self.lock()
                    .listeners
                    .insert(endpoint, ListenerSlot::Bound(listener));
                Input::Bound { endpoint }
            }
            Err(error) => {
                tracing::warn!(%addr, %error, "tcp endpoint bind failed");
                Input::BindFailed { endpoint }
            }
        }
    }
}

impl<L> State<L> {
    fn outgoing(&self, conn: ConnId, message: Outgoing) {
        if let Some(link) = self.conns.get(&conn) {
            deliver(link.outbox.clone(), message);
        }
    }

    fn target(&self, route: &Arc<Route>) -> Result<Target, NoTarget> {
        let link = self.conns.get(&route.conn).ok_or(NoTarget::Unknown)?;
        let handle = link.handle.clone().ok_or(NoTarget::Unknown)?;
        let gone = ConnectionGone(link.alive.clone());
        let permits = self
            .visitor_permits
            .get(&route.endpoint)
            .ok_or(NoTarget::Unknown)?;
        let permit = Arc::clone(permits)
            .try_acquire_owned()
            .map_err(|_| NoTarget::Busy)?;
        Ok(Target {
            route: Arc::clone(route),
            handle,
            permit,
            gone,
        })
    }
}

fn drain(gateway: &mut Gateway) -> Vec<Action> {
    std::iter::from_fn(|| gateway.poll_action()).collect()
}

/// Queues a message; lines are dropped when a client stops reading, the rest always arrive.
fn deliver(outbox: mpsc::Sender<Outgoing>, message: Outgoing) {
    match outbox.try_send(message) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(Outgoing::Print(..))) => {}
        Err(mpsc::error::TrySendError::Full(message)) => {
            tokio::spawn(async move {
                let _ = outbox.send(message).await;
            });
        }
    }
}

/// Lines gathered into one packet at most (well under one SSH packet).
const PRINT_BATCH_BYTES: usize = 16 * 1024;

/// Owns the writes to one connection's session channel, in order.
pub async fn run_outbox(
    handle: Handle,
    mut outbox: mpsc::Receiver<Outgoing>,
    close_grace: Duration,
) {
    let mut session: Option<(russh::ChannelId, bool)> = None;
    let mut next = None;
    loop {
        let message = match next.take() {
            Some(message) => message,
            None => match outbox.recv().await {
                Some(message) => message,
                None => return,
            },
        };
        match message {
            Outgoing::Session { channel, pty } => session = Some((channel, pty)),
            Outgoing::Print(stream, mut line) => {
                // The core prints only to an open session.
                let Some((channel, pty)) = session else {
                    continue;
                };
                let end = if pty { "\r\n" } else { "\n" };
                line.push_str(end);
                // Under load, lines queue up behind this one (one inspect line per request):
                // they go out in one packet, which the client handles in one wake-up.
                tokio::task::yield_now().await;
                while line.len() < PRINT_BATCH_BYTES {
                    match outbox.try_recv() {
                        Ok(Outgoing::Print(more_stream, more)) if more_stream == stream => {
                            line.push_str(&more);
                            line.push_str(end);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let sent = match stream {
                    OutputStream::Stdout => handle.data(channel, line).await,
                    OutputStream::Stderr => handle.extended_data(channel, 1, line).await,
                };
                if sent.is_err() {
                    return;
                }
            }
            Outgoing::Exit(status) => {
                if let Some((channel, _)) = session {
                    let _ = handle.exit_status_request(channel, status).await;
                }
            }
            Outgoing::Close(message) => {
                if let Some((channel, _)) = session {
                    let _ = handle.eof(channel).await;
                    let _ = handle.close(channel).await;
                    // A client that got its exit status hangs up by itself, which keeps OpenSSH
                    // from printing a disconnect notice; one that does not is cut off.
                    let _ = tokio::time::timeout(close_grace, async {
                        while outbox.recv().await.is_some() {}
                    })
                    .await;
                }
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, message, String::new())
                    .await;
                return;
            }
        }
    }
}
