//! The gateway: owns every connection, endpoint, name and port, and turns inputs into actions.
//!
//! Calling contract (as quinn-proto's `Connection` and str0m's `Rtc`): after each
//! [`Gateway::handle`] or [`Gateway::handle_timeout`], drain [`Gateway::poll_action`] until it
//! returns `None` and execute the actions in order; then ask [`Gateway::poll_timeout`] when to call
//! [`Gateway::handle_timeout`] next. Time and randomness come only from the caller.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_core::RngCore;

use crate::action::{Action, Reply, OutputStream};
use crate::command::{parse_command_line, Command, EndpointKind, HELP};
use crate::visitors::{Entrance, VisitorRefusal};
use crate::config::GatewayConfig;
use crate::endpoints::{inspect_line, Endpoint, Route};
use crate::error::{ForwardError, SessionError, Shown};
use crate::ids::{ConnId, EndpointId, KeyFingerprint, RequestId};
use crate::input::Input;
use crate::names::{normalize_host, Hostname};
use crate::ownership::{Address, Ownership};
use crate::ports::TcpPortPool;
use crate::timers::{Timer, TimerTable};

/// The syntax version this server speaks, selected by the SSH user `v2`.
pub const SYNTAX_VERSION: &str = "v2";

/// The disconnect message of a connection the server closes without an error to report.
pub const CLOSED_BY_SERVER: &str = "closed by the tunnel server";

/// The sans-IO gateway engine. See the module docs for the calling contract.
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    pub(crate) rng: Box<dyn RngCore + Send>,
    pub(crate) conns: BTreeMap<ConnId, Connection>,
    pub(crate) endpoints: BTreeMap<EndpointId, Endpoint>,
    /// Live routes only (tcp endpoints join once bound).
    pub(crate) routes: BTreeMap<Address, EndpointId>,
    pub(crate) ownership: Ownership,
    pub(crate) ports: TcpPortPool,
    pub(crate) timers: TimerTable,
    pub(crate) actions: VecDeque<Action>,
    /// Early listeners (see [`EarlyListener`]) and their connections.
    pub(crate) early_listeners: BTreeMap<EndpointId, ConnId>,
    next_endpoint: u64,
}

pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    /// Set while unauthenticated: the auth deadline.
    pub(crate) auth_deadline: Option<Instant>,
    pub(crate) key: Option<KeyFingerprint>,
    /// An error that ends the session; reported once the command is known.
    pub(crate) fatal: Option<SessionError>,
    pub(crate) command: CommandState,
    pub(crate) pending: Vec<PendingForward>,
    pub(crate) endpoints: BTreeSet<EndpointId>,
    pub(crate) session: Session,
    /// A session channel was opened; a second one is refused.
    pub(crate) session_channel: bool,
}

pub(crate) enum CommandState {
    /// No exec or shell yet; forwards wait until the deadline.
    Waiting { deadline: Option<Instant> },
    /// Known; `by_deadline` when the deadline passed with no command.
    Settled {
        command: Option<Command>,
        by_deadline: bool,
    },
}

pub(crate) enum Session {
    /// No session channel yet: lines wait here.
    NotYet(Vec<(OutputStream, String)>),
    Open,
    Closed,
}

/// A forward received before the command was known.
pub(crate) struct PendingForward {
    pub(crate) request: RequestId,
    pub(crate) bind_address: String,
    pub(crate) port: u32,
    pub(crate) reply: PendingReply,
}

pub(crate) enum PendingReply {
    /// Not answered yet ([`ReplyTiming::OnResolution`](crate::ReplyTiming::OnResolution)).
    Held,
    /// Answered before the command ([`ReplyTiming::Immediate`](crate::ReplyTiming::Immediate)):
    /// at once, or, for a forward that may be tcp, as soon as its early listener is bound.
    Sent {
        /// The port the client knows the forward by (the reply's port for port 0).
        channel_port: u32,
        /// The listener bound before the command for a forward that may be tcp, so that the
        /// port the reply names is really ours, and a visitor that connects before the command
        /// (or, with `ssh -N`, before the deadline) waits in the backlog instead of being refused.
        early: Option<EarlyListener>,
        /// An error the command cannot undo (a fixed tcp port held by another key), reported
        /// with the command. The reply itself was a grant, so that the user sees why.
        refused: Option<ForwardError>,
    },
}

/// A tcp listener bound before the command is known.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EarlyListener {
    pub(crate) endpoint: EndpointId,
    pub(crate) port: u16,
    /// Bound; the reply has been sent.
    pub(crate) bound: bool,
    pub(crate) attempts: usize,
}

impl Gateway {
    /// A gateway with no connections. `rng` supplies every random name; seed it for tests and
    /// simulations, use OS randomness in production.
    pub fn new(config: GatewayConfig, rng: Box<dyn RngCore + Send>) -> Self {
        let ports = TcpPortPool::new(config.tcp_ports().clone());
        Self {
            config,
            rng,
            conns: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            routes: BTreeMap::new(),
            ownership: Ownership::default(),
            ports,
            timers: TimerTable::default(),
            actions: VecDeque::new(),
            early_listeners: BTreeMap::new(),
            next_endpoint: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Feeds one event. Inputs naming a connection or endpoint the gateway no longer knows are
    /// answered as refusals or ignored: the adapter may race a close.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::ConnectionOpened { conn, peer } => self.connection_opened(now, conn, peer),
            Input::AuthRequested { conn, user, key } => self.auth_requested(now, conn, &user, key),
            Input::ForwardRequested {
                conn,
                request,
                bind_address,
                port,
            } => self.forward_requested(now, conn, request, bind_address, port),
            Input::ForwardCancelled {
                conn,
                request,
                bind_address,
                port,
            } => self.forward_cancelled(conn, request, &bind_address, port),
            Input::SessionRequested { conn } => self.session_requested(conn),
            Input::ExecRequested { conn, command } => self.command_requested(now, conn, &command),
            Input::ShellRequested { conn } => self.command_requested(now, conn, ""),
            Input::SessionData {
                conn,
                data,
                terminal,
            } => self.session_data(now, conn, &data, terminal),
            Input::SessionClosed { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = Session::Closed;
                }
            }
            Input::ConnectionClosed { conn } => self.drop_connection(now, conn),
            Input::Bound { endpoint } => self.bound(endpoint),
            Input::BindFailed { endpoint } => self.bind_failed(now, endpoint),
            Input::HttpRequestCompleted {
                endpoint,
                method,
                path,
                status,
                elapsed,
            } => {
                let Some(e) = self.endpoints.get(&endpoint) else {
                    return;
                };
                let inspect = e.route.logs_requests();
                let conn = e.route.conn;
                let open =
                    matches!(self.conns.get(&conn), Some(c) if matches!(c.session, Session::Open));
                if inspect && open {
                    let line = inspect_line(&method, &path, status, elapsed);
                    self.actions.push_back(Action::Print {
                        conn,
                        stream: OutputStream::Stdout,
                        line,
                    });
                }
            }
        }
    }

    /// The next action to execute, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Gateway::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Auth(conn) => {
                    let unauthenticated = self.conns.get(&conn).is_some_and(|c| c.key.is_none());
                    if unauthenticated {
                        self.actions.push_back(Action::Close { conn, message: CLOSED_BY_SERVER.to_owned() });
                        self.drop_connection(now, conn);
                    }
                }
                Timer::Command(conn) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if matches!(c.command, CommandState::Waiting { .. }) {
                            c.command = CommandState::Waiting { deadline: None };
                            self.settle(now, conn, None, true);
                        }
                    }
                }
                Timer::Reservation(address) => {
                    if self.ownership.expire(&address, now) {
                        if let Address::Port(port) = address {
                            self.ports.release(port);
                        }
                    }
                }
            }
        }
    }

    // ---- routing queries ----------------------------------------------------------------------

    /// Where a visitor on a public listener goes, by Host header value (HTTP) or SNI name
    /// (HTTPS), or why it goes nowhere: the listener decides which endpoint kinds it serves.
    pub fn route_for(&self, entrance: Entrance, host: &str) -> Result<&Arc<Route>, VisitorRefusal> {
        let route = self
            .route_by_host(host)
            .ok_or_else(|| VisitorRefusal::UnknownHost(host.to_owned()))?;
        match (entrance, route.policy.kind()) {
            (Entrance::Http | Entrance::Https, EndpointKind::Http)
            | (Entrance::Https, EndpointKind::Tls) => Ok(route),
            (Entrance::Http, EndpointKind::Tls | EndpointKind::Tcp)
            | (Entrance::Https, EndpointKind::Tcp) => Err(VisitorRefusal::NotHttp(host.to_owned())),
        }
    }

    /// Where a visitor on a tcp endpoint's port goes.
    pub fn route_for_port(&self, port: u16) -> Result<&Arc<Route>, VisitorRefusal> {
        self.route_by_port(port)
            .ok_or(VisitorRefusal::UnknownPort(port))
    }

    /// The live http or tls endpoint for a Host header value or SNI name (case-insensitive,
    /// port and trailing dot ignored), whatever the listener.
    pub fn route_by_host(&self, host: &str) -> Option<&Arc<Route>> {
        let name = Hostname::from_normalized(normalize_host(host)?);
        self.route_at(&Address::Name(name))
    }

    /// The live tcp endpoint listening on `port`.
    pub fn route_by_port(&self, port: u16) -> Option<&Arc<Route>> {
        self.route_at(&Address::Port(port))
    }

    fn route_at(&self, address: &Address) -> Option<&Arc<Route>> {
        let id = self.routes.get(address)?;
        self.endpoints.get(id).map(|e| &e.route)
    }

    // ---- counts, for leak checks --------------------------------------------------------------

    /// Connections the gateway tracks.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Endpoints, live or binding.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Live routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Tcp ports held: by endpoints, reservations or port-0 forwards awaiting their command.
    pub fn held_port_count(&self) -> usize {
        self.ports.held_count()
    }

    /// Names and ports reserved for keys whose connections ended.
    pub fn reservation_count(&self) -> usize {
        self.ownership.reservation_count()
    }

    /// Deadlines pending (auth, command, reservations).
    pub fn timer_count(&self) -> usize {
        self.timers.count()
    }

    /// Who holds each address: `(address, owner, live)`. For audits and tests.
    pub fn holders(&self) -> impl Iterator<Item = (&Address, &KeyFingerprint, bool)> {
        self.ownership.holders().map(|(a, h)| {
            (
                a,
                &h.owner,
                matches!(h.holding, crate::ownership::Holding::Live { .. }),
            )
        })
    }

    // ---- connections --------------------------------------------------------------------------

    fn connection_opened(&mut self, now: Instant, conn: ConnId, peer: SocketAddr) {
        if self.conns.contains_key(&conn) {
            return;
        }
        let unauthenticated_here = self
            .conns
            .values()
            .filter(|c| c.key.is_none() && c.peer.ip() == peer.ip())
            .count();
        if unauthenticated_here >= self.config.limits().unauthenticated_per_ip() {
            self.actions.push_back(Action::Close { conn, message: CLOSED_BY_SERVER.to_owned() });
            return;
        }
        let deadline = now + self.config.auth_timeout();
        self.timers.set(deadline, Timer::Auth(conn));
        self.conns.insert(
            conn,
            Connection {
                peer,
                auth_deadline: Some(deadline),
                key: None,
                fatal: None,
                command: CommandState::Waiting { deadline: None },
                pending: Vec::new(),
                endpoints: BTreeSet::new(),
                session: Session::NotYet(Vec::new()),
                session_channel: false,
            },
        );
    }

    fn auth_requested(&mut self, now: Instant, conn: ConnId, user: &str, key: KeyFingerprint) {
        // A connection already dropped (auth timeout, per-IP limit) is never let in.
        let accepted = self.conns.contains_key(&conn)
            && self
                .config
                .authorized_keys()
                .is_none_or(|keys| keys.contains(&key));
        self.actions.push_back(Action::Auth { conn, accepted });
        if !accepted {
            return;
        }
        let same_key = self
            .conns
            .values()
            .filter(|c| c.key.as_ref() == Some(&key))
            .count();
        let limit = self.config.limits().connections_per_key();
        let command_deadline = now + self.config.command_deadline();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.key.is_some() {
            return;
        }
        if let Some(at) = c.auth_deadline.take() {
            self.timers.cancel(at, Timer::Auth(conn));
        }
        c.key = Some(key);
        c.fatal = if same_key >= limit {
            Some(ForwardError::TooManyConnections(limit).into())
        } else {
            version_error(user)
        };
        c.command = CommandState::Waiting {
            deadline: Some(command_deadline),
        };
        self.timers.set(command_deadline, Timer::Command(conn));
    }

    fn command_requested(&mut self, now: Instant, conn: ConnId, line: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.key.is_none() {
            return;
        }
        if let Session::NotYet(queued) = std::mem::replace(&mut c.session, Session::Open) {
            for (stream, line) in queued {
                self.actions.push_back(Action::Print { conn, stream, line });
            }
        }
        let parsed = parse_command_line(line);
        match &c.command {
            CommandState::Settled {
                by_deadline: true, ..
            } => {
                let late = match parsed {
                    Ok(None) => return,
                    Ok(Some(Command::Help)) => return self.print_help(now, conn),
                    Ok(Some(_)) => SessionError::CommandTooLate,
                    Err(e) => e.into(),
                };
                self.fail(now, conn, late);
            }
            CommandState::Settled { .. } => self.fail(now, conn, SessionError::SecondCommand),
            CommandState::Waiting { deadline } => {
                if let Some(at) = *deadline {
                    self.timers.cancel(at, Timer::Command(conn));
                }
                match parsed {
                    Ok(command) => self.settle(now, conn, command, false),
                    Err(e) => self.fail(now, conn, e.into()),
                }
            }
        }
    }

    /// The command is known (or the deadline passed): resolve every waiting forward.
    fn settle(&mut self, now: Instant, conn: ConnId, command: Option<Command>, by_deadline: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let pending = std::mem::take(&mut c.pending);
        c.command = CommandState::Settled {
            command: command.clone(),
            by_deadline,
        };
        if let Some(e) = c.fatal.clone() {
            self.refuse_held(conn, pending);
            return self.fail(now, conn, e);
        }
        if command == Some(Command::Help) {
            self.refuse_held(conn, pending);
            return self.print_help(now, conn);
        }
        let had_forwards = !pending.is_empty() || !c.endpoints.is_empty();
        let mut pending = pending.into_iter();
        while let Some(forward) = pending.next() {
            let request = forward.request;
            let held = matches!(forward.reply, PendingReply::Held);
            if let Err(e) = self.resolve_forward(now, conn, forward, command.as_ref()) {
                if held {
                    self.reply(conn, request, Reply::Refused);
                }
                self.refuse_held(conn, pending.collect());
                return self.fail(now, conn, e.into());
            }
        }
        if !by_deadline && !had_forwards {
            self.fail(now, conn, SessionError::NoForwards);
        }
    }

    /// One session channel per connection: it is where the command and its output live.
    fn session_requested(&mut self, conn: ConnId) {
        let accepted = match self.conns.get_mut(&conn) {
            Some(c) if c.key.is_some() && !c.session_channel => {
                c.session_channel = true;
                true
            }
            _ => false,
        };
        self.actions
            .push_back(Action::SessionAnswer { conn, accepted });
    }

    /// In a terminal, ^C ends the session with status 130 (as a shell reports SIGINT) and ^D with
    /// 0; everything else typed is ignored. Without a terminal the bytes are the client's stdin,
    /// which carries no meaning here.
    fn session_data(&mut self, now: Instant, conn: ConnId, data: &[u8], terminal: bool) {
        const CTRL_C: u8 = 0x03;
        const CTRL_D: u8 = 0x04;
        if !terminal || !self.conns.contains_key(&conn) {
            return;
        }
        let status = match data.iter().find(|b| **b == CTRL_C || **b == CTRL_D) {
            Some(&CTRL_C) => 130,
            Some(_) => 0,
            None => return,
        };
        self.actions.push_back(Action::Exit { conn, status });
        self.actions.push_back(Action::Close { conn, message: CLOSED_BY_SERVER.to_owned() });
        self.drop_connection(now, conn);
    }

    fn print_help(&mut self, now: Instant, conn: ConnId) {
        for line in HELP.lines() {
            self.print(conn, OutputStream::Stdout, line.to_owned());
        }
        self.actions.push_back(Action::Exit { conn, status: 0 });
        self.actions.push_back(Action::Close { conn, message: CLOSED_BY_SERVER.to_owned() });
        self.drop_connection(now, conn);
    }

    /// Ends a session with its error: one stderr line if a session can show it, an exit status,
    /// and the connection closed. Before the command is known, the error waits for it.
    pub(crate) fn fail(&mut self, now: Instant, conn: ConnId, error: SessionError) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let waiting = matches!(c.command, CommandState::Waiting { .. });
        if waiting && !matches!(c.session, Session::Open) {
            c.fatal.get_or_insert(error);
            return;
        }
        // Forwards still waiting for the command are refused, not left unanswered.
        let pending = std::mem::take(&mut c.pending);
        let open = matches!(c.session, Session::Open);
        self.refuse_held(conn, pending);
        let line = error.user_line();
        // Without a session channel (`ssh -N`) the disconnect message is the only place OpenSSH
        // shows it.
        let message = if open {
            self.actions.push_back(Action::Print {
                conn,
                stream: OutputStream::Stderr,
                line,
            });
            self.actions.push_back(Action::Exit {
                conn,
                status: error.exit_status(),
            });
            CLOSED_BY_SERVER.to_owned()
        } else {
            line
        };
        self.actions.push_back(Action::Close { conn, message });
        self.drop_connection(now, conn);
    }

    /// Forgets a connection: its routes go at once, its names and ports stay reserved for its
    /// key for the grace period.
    fn drop_connection(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(at) = c.auth_deadline {
            self.timers.cancel(at, Timer::Auth(conn));
        }
        if let CommandState::Waiting { deadline: Some(at) } = c.command {
            self.timers.cancel(at, Timer::Command(conn));
        }
        for forward in c.pending {
            if let PendingReply::Sent {
                early: Some(early), ..
            } = forward.reply
            {
                self.release_early(early);
            }
        }
        for endpoint in c.endpoints {
            self.remove_endpoint(now, endpoint, Removal::ConnectionEnded);
        }
    }

    pub(crate) fn refuse_held(&mut self, conn: ConnId, forwards: Vec<PendingForward>) {
        for forward in forwards {
            match forward.reply {
                PendingReply::Held => self.reply(conn, forward.request, Reply::Refused),
                PendingReply::Sent { early, .. } => {
                    if let Some(early) = early {
                        if !early.bound {
                            self.reply(conn, forward.request, Reply::Refused);
                        }
                        self.release_early(early);
                    }
                }
            }
        }
    }

    /// Drops an early listener that will not become an endpoint.
    pub(crate) fn release_early(&mut self, early: EarlyListener) {
        self.early_listeners.remove(&early.endpoint);
        self.ports.release(early.port);
        self.actions.push_back(Action::Unbind {
            endpoint: early.endpoint,
            port: early.port,
        });
    }

    // ---- output -------------------------------------------------------------------------------

    pub(crate) fn reply(&mut self, conn: ConnId, request: RequestId, reply: Reply) {
        self.actions.push_back(Action::Reply {
            conn,
            request,
            reply,
        });
    }

    /// Prints a line, or keeps it until the session channel opens.
    pub(crate) fn print(&mut self, conn: ConnId, stream: OutputStream, line: String) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.session {
            Session::Open => self.actions.push_back(Action::Print { conn, stream, line }),
            Session::NotYet(queued) if queued.len() < self.config.limits().queued_lines() => {
                queued.push((stream, line));
            }
            Session::NotYet(_) | Session::Closed => {}
        }
    }

    pub(crate) fn next_endpoint_id(&mut self) -> EndpointId {
        self.next_endpoint += 1;
        EndpointId::from_raw(self.next_endpoint)
    }
}

/// Why an endpoint goes away, which decides what happens to its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Its connection ended: the address stays reserved for the key.
    ConnectionEnded,
    /// The client cancelled it, or its bind failed: the address is free again.
    Released,
    /// The same key took the address on another connection: the new holder has it already.
    TakenOver,
}

/// The user-name rule: `v2` or any non-version name means our syntax; `v<digits>` otherwise is
/// refused, naming the version we speak.
fn version_error(user: &str) -> Option<SessionError> {
    let digits = user.strip_prefix('v')?;
    let is_version = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    (is_version && user != SYNTAX_VERSION)
        .then(|| SessionError::UnsupportedVersion(Shown::from(user)))
}
