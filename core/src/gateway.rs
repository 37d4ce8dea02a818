//! The gateway: owns every connection, forward, name and port, and turns inputs into actions.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_core::RngCore;

use crate::action::{Action, OutputStream, Reply};
use crate::authorized::{KeyList, Revoked};
use crate::certificates::{certificate_login, CertificateLogin, UserCertificate};
use crate::command::{parse_command_line, AdminCommand, Command, EndpointKind, HELP};
use crate::config::GatewayConfig;
use crate::endpoints::{inspect_line, public_url, Route};
use crate::error::{ForwardError, SessionError, Shown};
use crate::forward::Asked;
use crate::forwards::{Effects, Forwards};
use crate::ids::{ConnId, EndpointId, KeyFingerprint, RequestId};
use crate::input::Input;
use crate::key_rules::KeyRules;
use crate::listing::{connections_table, endpoints_table, listing, released_address};
use crate::names::{normalize_host, Hostname};
use crate::ownership::{Address, Claim, Holding};
use crate::ports::TcpPortPool;
use crate::saved::{RestoreSkipped, SavedHolding};
use crate::timers::{Timer, TimerTable};
use crate::views::{ConnectionView, EndpointView, ReleaseOutcome, ReservationView};
use crate::visitors::{visitor_source, Entrance, VisitorRefusal};

/// The syntax version this server speaks, selected by the SSH user `v2`.
pub const SYNTAX_VERSION: &str = "v2";

/// The disconnect message of a connection the server closes without an error to report.
pub const CLOSED_BY_SERVER: &str = "closed by the tunnel server";

/// The disconnect message, and the start of the session line, when the server stops.
pub const SERVER_RESTARTING: &str = "server restarting";

/// The session line (or disconnect message) of a connection the operator closed, before the
/// reason given.
pub const KICKED: &str = "disconnected by the operator";

/// The sans-IO gateway engine: every SSH connection, forward, name and port of one server.
///
/// # Calling contract
///
/// The gateway never does anything by itself; the adapter (the embedder's network code) drives
/// it, as quinn-proto's `Connection` and str0m's `Rtc` are driven:
///
/// 1. **One mutation at a time.** Call [`Gateway::handle`] with an [`Input`] for each event the
///    network produced (a connection, an authentication, a `tcpip-forward`, a bind result, ...),
///    or [`Gateway::handle_timeout`] when the deadline from `poll_timeout` has come.
/// 2. **Then drain.** Call [`Gateway::poll_action`] until it returns `None` and carry out each
///    [`Action`] in the order given, before the next mutation: replies answer the request they
///    name, a `Print` comes before the `Exit` before the `Close` of the same connection, and a
///    [`Action::Bind`] must be answered with [`Input::Bound`] or [`Input::BindFailed`] (a forward's
///    reply may wait for it). Actions left undrained are still given out later, in order.
/// 3. **Then ask for the next deadline.** [`Gateway::poll_timeout`] says when
///    [`Gateway::handle_timeout`] must next be called; any input may move it.
///
/// Time is the caller's: every `now` comes from one monotonic clock and never goes backwards
/// (simulations pass simulated time). Randomness is the caller's: the RNG given to
/// [`Gateway::new`] makes every random name. The routing queries ([`Gateway::route_for`],
/// [`Gateway::route_for_port`]) read the state without changing it; a [`Route`] they return
/// stays valid for the visitor that got it even after the endpoint goes.
///
/// An operator reads the state with [`Gateway::connections_view`], [`Gateway::endpoints_view`]
/// and [`Gateway::reservations_view`] (queries, like routing, measured from the `now` given), and
/// acts through inputs like any other: [`Input::Kick`] and [`Input::Release`].
///
/// Inputs are never trusted: a malformed command line, an unknown connection or a stale bind
/// answer is refused or ignored, never a panic (a panic is a bug).
///
/// The crate's front page has a worked example: a connection, a forward, the command, a
/// visitor's admission, and the reservation left when the connection closes, each input followed
/// by draining its actions.
pub struct Gateway {
    config: GatewayConfig,
    rng: Box<dyn RngCore + Send>,
    conns: BTreeMap<ConnId, Connection>,
    forwards: Forwards,
    timers: TimerTable,
    actions: VecDeque<Action>,
    /// Set by [`Input::Stopping`]: new connections are closed.
    stopping: bool,
    /// Sessions ended by an error, by [`SessionError::reason`], for metrics.
    refusals: BTreeMap<&'static str, u64>,
}

struct Connection {
    peer: SocketAddr,
    /// When the gateway was told of it, for the operator's view.
    opened: Instant,
    /// Set once authenticated: the identity that owns names (the key's fingerprint, or a
    /// certificate's CA and principal).
    key: Option<KeyFingerprint>,
    /// How it authenticated, which says which lines' rules apply to it.
    login: Login,
    /// An error that ends the session; reported once the command is known.
    fatal: Option<SessionError>,
    command: CommandState,
    session: Session,
    /// A session channel was opened; a second one is refused.
    session_channel: bool,
    /// Closed by the gateway before it authenticated: it keeps its unauthenticated slot until
    /// the adapter reports the socket closed, so a client that ignores the close cannot
    /// outnumber the cap.
    closing: bool,
}

enum Login {
    /// With a listed key (or not yet authenticated).
    Key,
    /// With a certificate signed by a `cert-authority` key.
    Certificate {
        authority: KeyFingerprint,
        principal: String,
        /// The certificate's own `source-address` and `permit-port-forwarding`.
        restrictions: KeyRules,
    },
}

enum CommandState {
    /// No exec or shell yet: forwards wait for it until the command deadline.
    Waiting,
    /// Known; `by_deadline` when the deadline passed with no command.
    Settled {
        command: Option<Box<Command>>,
        by_deadline: bool,
    },
}

enum Session {
    /// No session channel yet: lines wait here.
    NotYet(Vec<(OutputStream, String)>),
    Open,
    Closed,
}

impl Gateway {
    /// A gateway with no connections. `rng` supplies every random name: seed it for tests and
    /// simulations, use OS randomness in production.
    pub fn new(config: GatewayConfig, rng: Box<dyn RngCore + Send>) -> Self {
        let ports = TcpPortPool::new(config.tcp_ports().clone());
        Self {
            config,
            rng,
            conns: BTreeMap::new(),
            forwards: Forwards::new(ports),
            timers: TimerTable::default(),
            actions: VecDeque::new(),
            stopping: false,
            refusals: BTreeMap::new(),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Feeds one event that happened at `now`; then drain [`Gateway::poll_action`]. Inputs naming
    /// a connection or endpoint the gateway no longer knows are refused or ignored: the adapter
    /// may race a close.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::ConnectionOpened { conn, peer } => self.connection_opened(now, conn, peer),
            Input::AuthRequested { conn, user, key } => self.auth_requested(now, conn, &user, key),
            Input::CertificateAuthRequested {
                conn,
                user,
                certificate,
            } => self.certificate_auth_requested(now, conn, &user, &certificate),
            Input::ForwardRequested {
                conn,
                request,
                bind_address,
                port,
            } => self.forward_requested(now, conn, request, Asked { bind_address, port }),
            Input::ForwardCancelled {
                conn,
                request,
                bind_address,
                port,
            } => self.with_forwards(now, |f, fx| {
                f.cancel(fx, conn, request, &bind_address, port);
                Ok(())
            }),
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
            Input::Stopping => self.stopping(),
            Input::Stopped => {
                let conns: Vec<ConnId> = self.conns.keys().copied().collect();
                for conn in conns {
                    self.close(conn, SERVER_RESTARTING.to_owned());
                }
            }
            Input::Bound { endpoint } => self.bind_answered(now, endpoint, true),
            Input::BindFailed { endpoint } => self.bind_answered(now, endpoint, false),
            Input::AuthorizedKeysChanged { keys } => self.authorized_keys_changed(now, keys),
            Input::Reconfigured { config } => self.config.take_live(*config),
            Input::Kick { conn, reason } => self.kick(now, conn, reason.as_deref()),
            Input::Release { address } => {
                if self.release_outcome(&address) == ReleaseOutcome::Released {
                    self.end_reservation(&address);
                }
            }
            Input::HttpRequestCompleted {
                endpoint,
                method,
                path,
                status,
                elapsed,
            } => {
                // `--inspect`: decided by the route, whoever sent this.
                let Some(conn) = self
                    .forwards
                    .route_of(endpoint)
                    .filter(|route| route.logs_requests())
                    .map(|route| route.conn)
                else {
                    return;
                };
                let open = self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| matches!(c.session, Session::Open));
                if open {
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

    /// The next action to carry out, in order; `None` once drained.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Gateway::handle_timeout`] must next be called, if ever. Ask again after every
    /// `handle`: inputs move deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs every deadline due at `now`; then drain [`Gateway::poll_action`].
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Auth(conn) => {
                    if let Some(c) = self.conns.get_mut(&conn).filter(|c| c.key.is_none()) {
                        c.closing = true;
                        self.close(conn, CLOSED_BY_SERVER.to_owned());
                    }
                }
                Timer::Command(conn) => {
                    let waiting = self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| matches!(c.command, CommandState::Waiting));
                    if waiting {
                        self.settle(now, conn, None, true);
                    }
                }
                Timer::Reservation(address) => self.forwards.reservation_expired(now, &address),
            }
        }
    }

    // ---- routing queries ----------------------------------------------------------------------

    /// Where a visitor on a public listener goes, by Host header value (HTTP) or SNI name
    /// (HTTPS), or why it goes nowhere: the listener decides which endpoint kinds it serves.
    pub fn route_for(&self, entrance: Entrance, host: &str) -> Result<&Arc<Route>, VisitorRefusal> {
        let Some(route) = self.route_by_host(host) else {
            let domain = self.config.domain();
            let name = normalize_host(host).unwrap_or_default();
            return Err(if name == domain {
                VisitorRefusal::Home(self.config.home_page())
            } else if name.ends_with(&format!(".{domain}")) {
                VisitorRefusal::UnknownHost(host.to_owned())
            } else {
                VisitorRefusal::Foreign(host.to_owned())
            });
        };
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
        self.forwards.route_at(&Address::Name(name))
    }

    /// The live tcp endpoint listening on `port`.
    pub fn route_by_port(&self, port: u16) -> Option<&Arc<Route>> {
        self.forwards.route_at(&Address::Port(port))
    }

    /// Whether this key may go on to sign. Ask it when the client only offers a key (RFC 4252
    /// §7, before signing): an unlisted key is refused before the client signs anything, which
    /// spares a hardware key its touch. [`Input::AuthRequested`] gives the final answer. With a
    /// `cert-authority` line every key may go on: the SSH stack offers a certificate as its bare
    /// key, so the certificate is judged only at [`Input::CertificateAuthRequested`].
    pub fn accepts_key(&self, key: &KeyFingerprint) -> bool {
        self.key_listed(key) || self.config.has_authorities()
    }

    /// Whether the key itself is listed (any key, without a list).
    fn key_listed(&self, key: &KeyFingerprint) -> bool {
        self.config
            .authorized_keys()
            .is_none_or(|keys| keys.contains(key))
    }

    // ---- across a restart ---------------------------------------------------------------------

    /// Every address a key holds, to be kept across a restart and handed to
    /// [`Gateway::restore`] after it. Save it again whenever [`Gateway::holdings_version`] moves.
    pub fn saved_holdings(&self, now: Instant) -> Vec<SavedHolding> {
        self.forwards.saved(now)
    }

    /// A number that moves whenever an address is taken, reserved or freed.
    pub fn holdings_version(&self) -> u64 {
        self.forwards.ownership.version()
    }

    /// Reserves each saved address for its key again, as after its connection ended: a live one
    /// for the whole name grace from `now`, a reserved one for what was left of it. Call it at
    /// start, before any connection. Returns what was left out, and why: a name no longer under
    /// the domain, a port outside the range, a reservation whose time was up.
    pub fn restore(
        &mut self,
        now: Instant,
        saved: impl IntoIterator<Item = SavedHolding>,
    ) -> Vec<(SavedHolding, RestoreSkipped)> {
        // A key taken out of authorized_keys while the server was down keeps nothing.
        let (listed, unlisted): (Vec<_>, Vec<_>) =
            saved.into_iter().partition(|s| self.is_listed(&s.owner));
        let mut skipped: Vec<_> = unlisted
            .into_iter()
            .map(|s| (s, RestoreSkipped::Unlisted))
            .collect();
        self.with_forwards(now, |forwards, fx| {
            for s in listed {
                let kept = s.clone();
                if let Err(why) = forwards.restore(fx, s) {
                    skipped.push((kept, why));
                }
            }
            Ok(())
        });
        skipped
    }

    /// The identity an authenticated connection owns names as: its key's fingerprint, or for
    /// a certificate login [`KeyFingerprint::of_principal`] of its CA and principal.
    pub fn identity(&self, conn: ConnId) -> Option<&KeyFingerprint> {
        self.conns.get(&conn)?.key.as_ref()
    }

    // ---- counts, for leak checks --------------------------------------------------------------

    /// Connections the gateway tracks, authenticated or not.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Forwards in any state: answered and waiting for the command, binding, or live.
    pub fn endpoint_count(&self) -> usize {
        self.forwards.count()
    }

    /// Live routes.
    pub fn route_count(&self) -> usize {
        self.forwards.route_count()
    }

    /// Tcp ports held: by endpoints, by reservations, or by listeners of forwards waiting for
    /// their command.
    pub fn held_port_count(&self) -> usize {
        self.forwards.ports.held_count()
    }

    /// Names and ports reserved for keys whose connections ended.
    pub fn reservation_count(&self) -> usize {
        self.forwards.ownership.reservation_count()
    }

    /// Deadlines pending (auth, command, reservations).
    pub fn timer_count(&self) -> usize {
        self.timers.count()
    }

    /// Who holds each address: `(address, owner, live)`; `live` is false for a reservation. For
    /// audits and tests.
    pub fn holders(&self) -> impl Iterator<Item = (&Address, &KeyFingerprint, bool)> {
        self.forwards
            .ownership
            .holders()
            .map(|(a, h)| (a, &h.owner, matches!(h.holding, Holding::Live { .. })))
    }

    // ---- the operator's view -----------------------------------------------------------------

    /// Every connection, in id order, with its age at `now` and its live endpoints.
    pub fn connections_view(&self, now: Instant) -> Vec<ConnectionView> {
        self.conns
            .iter()
            .map(|(&conn, c)| ConnectionView {
                conn,
                key: c.key.clone(),
                peer: c.peer,
                connected_for: now.saturating_duration_since(c.opened),
                endpoints: self
                    .forwards
                    .live_of(conn)
                    .map(|(_, r)| r.endpoint)
                    .collect(),
            })
            .collect()
    }

    /// Every live endpoint, in id order, with its public URL as its `Forwarding` line shows it.
    pub fn endpoints_view(&self) -> Vec<EndpointView> {
        self.forwards
            .live()
            .filter_map(|(asked_port, route)| {
                let key = self.conns.get(&route.conn)?.key.clone()?;
                Some(EndpointView {
                    endpoint: route.endpoint,
                    conn: route.conn,
                    kind: route.policy.kind(),
                    url: public_url(route, asked_port, &self.config),
                    address: route.address.clone(),
                    key,
                })
            })
            .collect()
    }

    /// Every reservation, in address order, with the time left of it at `now`.
    pub fn reservations_view(&self, now: Instant) -> Vec<ReservationView> {
        self.forwards
            .ownership
            .holders()
            .filter_map(|(address, h)| match h.holding {
                Holding::Reserved { until } => Some(ReservationView {
                    address: address.clone(),
                    key: h.owner.clone(),
                    left: until.saturating_duration_since(now),
                }),
                Holding::Live { .. } => None,
            })
            .collect()
    }

    /// What [`Input::Release`] of `address` would do now. Changes nothing.
    pub fn release_outcome(&self, address: &Address) -> ReleaseOutcome {
        let ownership = &self.forwards.ownership;
        if ownership.is_reserved(address) {
            ReleaseOutcome::Released
        } else if ownership.is_held(address) {
            ReleaseOutcome::Live
        } else {
            ReleaseOutcome::NotHeld
        }
    }

    /// The operator ends a connection: its session reads why, and its names and ports are
    /// reserved for its key as after any disconnect.
    fn kick(&mut self, now: Instant, conn: ConnId, reason: Option<&str>) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let line = match reason.map(one_line).filter(|r| !r.is_empty()) {
            Some(reason) => format!("{KICKED}: {reason}"),
            None => KICKED.to_owned(),
        };
        self.end_session(now, conn, line, 1);
    }

    /// How many sessions each kind of refusal ended since start, by [`SessionError::reason`]
    /// (an error told once the command is known counts then). For metrics: the counts only grow.
    pub fn refusal_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.refusals.iter().map(|(&reason, &n)| (reason, n))
    }

    // ---- connections --------------------------------------------------------------------------

    fn connection_opened(&mut self, now: Instant, conn: ConnId, peer: SocketAddr) {
        if self.conns.contains_key(&conn) {
            return;
        }
        if self.stopping {
            return self.close(conn, SERVER_RESTARTING.to_owned());
        }
        let source = visitor_source(peer.ip());
        let (mut everywhere, mut here) = (0, 0);
        for c in self.conns.values().filter(|c| c.key.is_none()) {
            everywhere += 1;
            if visitor_source(c.peer.ip()) == source {
                here += 1;
            }
        }
        let limits = self.config.limits();
        let crowded = here >= limits.unauthenticated_per_ip()
            || limits.startups().drops(everywhere, || self.rng.next_u32());
        if crowded {
            return self.close(conn, CLOSED_BY_SERVER.to_owned());
        }
        self.timers
            .set(Timer::Auth(conn), now + self.config.auth_timeout());
        self.conns.insert(
            conn,
            Connection {
                peer,
                opened: now,
                key: None,
                login: Login::Key,
                fatal: None,
                command: CommandState::Waiting,
                session: Session::NotYet(Vec::new()),
                session_channel: false,
                closing: false,
            },
        );
    }

    fn auth_requested(&mut self, now: Instant, conn: ConnId, user: &str, key: KeyFingerprint) {
        // A connection already dropped (auth timeout, per-IP limit) is never let in.
        let peer = self.conns.get(&conn).filter(|c| !c.closing).map(|c| c.peer);
        let allowed_here = |peer: SocketAddr| {
            self.config
                .rules_for(&key)
                .is_none_or(|rules| rules.admits(peer.ip(), now))
        };
        let accepted = peer.is_some_and(allowed_here) && self.key_listed(&key);
        self.actions.push_back(Action::Auth { conn, accepted });
        if accepted {
            self.authenticated(now, conn, user, key, Login::Key);
        }
    }

    fn certificate_auth_requested(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: &str,
        certificate: &UserCertificate,
    ) {
        let Some(peer) = self.conns.get(&conn).filter(|c| !c.closing).map(|c| c.peer) else {
            return self.actions.push_back(Action::Auth {
                conn,
                accepted: false,
            });
        };
        let authority = self.config.authority(&certificate.authority);
        match certificate_login(certificate, user, authority, peer.ip(), now) {
            Ok(CertificateLogin {
                identity,
                principal,
                restrictions,
            }) => {
                self.actions.push_back(Action::Auth {
                    conn,
                    accepted: true,
                });
                let login = Login::Certificate {
                    authority: certificate.authority.clone(),
                    principal,
                    restrictions,
                };
                self.authenticated(now, conn, user, identity, login);
            }
            Err(reason) => {
                self.actions
                    .push_back(Action::CertificateRefused { conn, reason });
                self.actions.push_back(Action::Auth {
                    conn,
                    accepted: false,
                });
            }
        }
    }

    /// An accepted login: `key` is the identity that owns what the connection asks for.
    fn authenticated(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: &str,
        key: KeyFingerprint,
        login: Login,
    ) {
        let same_key = self
            .conns
            .values()
            .filter(|c| c.key.as_ref() == Some(&key))
            .count();
        let limit = self.config.limits().connections_per_key();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.key.is_some() {
            return;
        }
        c.key = Some(key);
        c.login = login;
        c.fatal = if same_key >= limit {
            Some(ForwardError::TooManyConnections(limit).into())
        } else {
            version_error(user)
        };
        self.timers.cancel(&Timer::Auth(conn));
        self.timers
            .set(Timer::Command(conn), now + self.config.command_deadline());
    }

    fn forward_requested(&mut self, now: Instant, conn: ConnId, request: RequestId, asked: Asked) {
        let Some(c) = self.conns.get(&conn) else {
            return self.reply(conn, request, Reply::Refused);
        };
        let Some(key) = c.key.clone() else {
            self.reply(conn, request, Reply::Refused);
            return self.fail(now, conn, ForwardError::NotAuthenticated.into());
        };
        if c.fatal.is_some() {
            // The session's error is told with the command; a grant lets the client get that
            // far even with ExitOnForwardFailure.
            let port = (asked.port == 0).then_some(u32::from(self.config.http_port()));
            return self.reply(conn, request, Reply::Granted { port });
        }
        let limit = self.config.limits().endpoints_per_connection();
        let refusal = if let Some(e) = self.forbids_forward(c, &key, &asked) {
            Some(e)
        } else if self.forwards.count_of(conn) >= limit {
            Some(ForwardError::TooManyEndpoints(limit))
        } else if self.forwards.is_duplicate(conn, &asked) {
            Some(ForwardError::Duplicate(
                asked.bind_address.as_str().into(),
                asked.port,
            ))
        } else {
            None
        };
        if let Some(e) = refusal {
            self.reply(conn, request, Reply::Refused);
            return self.fail(now, conn, e.into());
        }
        match &c.command {
            CommandState::Settled { command, .. } => {
                let command = command.clone();
                self.with_forwards(now, |f, fx| {
                    f.request_settled(fx, conn, &key, request, asked, command.as_deref())
                        .map_err(|e| (conn, e))
                });
            }
            CommandState::Waiting => self.with_forwards(now, |f, fx| {
                f.request_early(fx, conn, &key, request, asked);
                Ok(())
            }),
        }
    }

    /// Why the rules that apply to this login refuse `asked`, if they do: its key's line, or
    /// its CA's line and then its certificate's own restrictions.
    fn forbids_forward(
        &self,
        c: &Connection,
        key: &KeyFingerprint,
        asked: &Asked,
    ) -> Option<ForwardError> {
        let (bind, port) = (asked.bind_address.as_str(), asked.port);
        let line_permits = match &c.login {
            Login::Key => self.config.rules_for(key),
            Login::Certificate { authority, .. } => self.config.authority(authority),
        }
        .is_none_or(|rules| rules.permits_forward(bind, port));
        if !line_permits {
            return Some(ForwardError::ForwardNotPermitted(bind.into(), port));
        }
        match &c.login {
            Login::Certificate { restrictions, .. }
                if !restrictions.permits_forward(bind, port) =>
            {
                Some(ForwardError::CertificateForbidsForwarding(
                    bind.into(),
                    port,
                ))
            }
            _ => None,
        }
    }

    fn bind_answered(&mut self, now: Instant, endpoint: EndpointId, bound: bool) {
        let Some(conn) = self.forwards.conn_of(endpoint) else {
            return;
        };
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(key) = c.key.clone() else {
            return;
        };
        let command = match &c.command {
            CommandState::Settled { command, .. } => Some(command.clone()),
            CommandState::Waiting => None,
        };
        self.with_forwards(now, |f, fx| {
            let settled = command.as_ref().map(Option::as_deref);
            let result = if bound {
                f.bound(fx, endpoint, &key, settled)
            } else {
                f.bind_failed(fx, endpoint, &key, settled)
            };
            result.map_err(|e| (conn, e))
        });
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
            CommandState::Waiting => {
                self.timers.cancel(&Timer::Command(conn));
                match parsed {
                    Ok(command) => self.settle(now, conn, command, false),
                    Err(e) => self.fail(now, conn, e.into()),
                }
            }
        }
    }

    /// The command is known (or the deadline passed): every waiting forward becomes an endpoint.
    fn settle(&mut self, now: Instant, conn: ConnId, command: Option<Command>, by_deadline: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.command = CommandState::Settled {
            command: command.clone().map(Box::new),
            by_deadline,
        };
        let Some(key) = c.key.clone() else {
            return;
        };
        if let Some(e) = c.fatal.clone() {
            return self.fail(now, conn, e);
        }
        match &command {
            Some(Command::Help) => return self.print_help(now, conn),
            Some(Command::List) => {
                let lines = listing(&self.forwards, &self.config, &key, conn, now);
                return self.answer_and_exit(now, conn, lines);
            }
            Some(Command::Release(text)) => return self.release(now, conn, &key, text),
            Some(Command::Admin(asked)) => return self.admin(now, conn, &key, asked.clone()),
            _ => {}
        }
        if !by_deadline && self.forwards.count_of(conn) == 0 {
            return self.fail(now, conn, SessionError::NoForwards);
        }
        self.with_forwards(now, |f, fx| {
            f.settle(fx, conn, &key, command.as_ref())
                .map_err(|e| (conn, e))
        });
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
        self.close(conn, CLOSED_BY_SERVER.to_owned());
        self.drop_connection(now, conn);
    }

    fn print_help(&mut self, now: Instant, conn: ConnId) {
        let lines = HELP.lines().map(str::to_owned).collect();
        self.answer_and_exit(now, conn, lines);
    }

    /// A command that answers and is done (`help`, `list`, `release`): its lines on stdout, exit
    /// status 0, and the connection closed (forwards it asked for are refused).
    fn answer_and_exit(&mut self, now: Instant, conn: ConnId, lines: Vec<String>) {
        self.with_forwards(now, |f, fx| {
            f.refuse_owed(fx, conn);
            Ok(())
        });
        for line in lines {
            self.print(conn, OutputStream::Stdout, line);
        }
        self.actions.push_back(Action::Exit { conn, status: 0 });
        self.close(conn, CLOSED_BY_SERVER.to_owned());
        self.drop_connection(now, conn);
    }

    /// A reservation ends before its time (an operator's release, its owner's `release`, its
    /// key removed): the address is free at once, its timer gone.
    fn end_reservation(&mut self, address: &Address) {
        self.timers.cancel(&Timer::Reservation(address.clone()));
        self.forwards.reservation_revoked(address);
    }

    /// `admin ...`: the operator's views and kick, for keys listed in `--admin-keys`.
    fn admin(&mut self, now: Instant, conn: ConnId, key: &KeyFingerprint, asked: AdminCommand) {
        if !self.config.is_admin(key) {
            return self.fail(now, conn, SessionError::NotAnAdmin);
        }
        let lines = match asked {
            AdminCommand::Connections => {
                connections_table(&self.connections_view(now), &self.endpoints_view())
            }
            AdminCommand::Endpoints => endpoints_table(&self.endpoints_view()),
            AdminCommand::Kick { conn: raw, reason } => {
                let target = ConnId::from_raw(raw);
                if !self.conns.contains_key(&target) {
                    let shown = target.to_string();
                    return self.fail(
                        now,
                        conn,
                        SessionError::NoSuchConnection(shown.as_str().into()),
                    );
                }
                self.kick(now, target, reason.as_deref());
                vec![format!("kicked {target}")]
            }
        };
        self.answer_and_exit(now, conn, lines);
    }

    /// `release NAME|PORT`: one of the key's reservations ends now, and the address is free.
    fn release(&mut self, now: Instant, conn: ConnId, key: &KeyFingerprint, text: &str) {
        let address = match released_address(text, &self.config) {
            Ok(address) => address,
            Err(e) => return self.fail(now, conn, e),
        };
        match self.forwards.ownership.check(&address, key) {
            Claim::Reclaimed { .. } => {
                self.end_reservation(&address);
                let shown = match &address {
                    Address::Name(name) => name.to_string(),
                    Address::Port(port) => format!("tcp port {port}"),
                };
                self.answer_and_exit(now, conn, vec![format!("released {shown}")]);
            }
            Claim::TakeOver { .. } => self.fail(now, conn, SessionError::ReleaseLive(text.into())),
            Claim::Free | Claim::Taken | Claim::Reserved => {
                self.fail(now, conn, SessionError::NotReserved(text.into()));
            }
        }
    }

    /// Ends a session with its error: one stderr line and an exit status if a session can show
    /// them, else the line as the disconnect message; then the connection is closed. Before the
    /// command is known, the error waits for it, so that the user reads it.
    fn fail(&mut self, now: Instant, conn: ConnId, error: SessionError) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let open = matches!(c.session, Session::Open);
        if matches!(c.command, CommandState::Waiting) && !open {
            c.fatal.get_or_insert(error);
            return;
        }
        *self.refusals.entry(error.reason()).or_default() += 1;
        self.end_session(now, conn, error.user_line(), error.exit_status());
    }

    /// Ends a session now: `line` on stderr and `status` if a session is open, else `line` as
    /// the disconnect message; then the connection is closed.
    fn end_session(&mut self, now: Instant, conn: ConnId, line: String, status: u32) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let open = matches!(c.session, Session::Open);
        // Requests still owed an answer are refused, not left unanswered.
        self.with_forwards(now, |f, fx| {
            f.refuse_owed(fx, conn);
            Ok(())
        });
        let message = if open {
            self.actions.push_back(Action::Print {
                conn,
                stream: OutputStream::Stderr,
                line,
            });
            self.actions.push_back(Action::Exit { conn, status });
            CLOSED_BY_SERVER.to_owned()
        } else {
            // Without a session channel (`ssh -N`) the disconnect message is the only place
            // OpenSSH shows it.
            line
        };
        self.close(conn, message);
        self.drop_connection(now, conn);
    }

    // ---- authorized keys ----------------------------------------------------------------------

    /// A new `authorized_keys` list: connections it no longer admits are closed, and what was
    /// reserved for a key no longer listed is freed (a removed key keeps no names).
    fn authorized_keys_changed(&mut self, now: Instant, keys: KeyList) {
        self.config.set_key_list(keys);
        let revoked: Vec<(ConnId, Revoked)> = self
            .conns
            .iter()
            .filter_map(|(&conn, c)| self.revocation(c, now).map(|why| (conn, why)))
            .collect();
        for (conn, why) in revoked {
            self.end_session(now, conn, why.to_string(), 1);
        }
        let unlisted: Vec<Address> = self
            .forwards
            .ownership
            .holders()
            .filter(|(_, h)| matches!(h.holding, Holding::Reserved { .. }))
            .filter(|(_, h)| !self.is_listed(&h.owner))
            .map(|(address, _)| address.clone())
            .collect();
        for address in unlisted {
            self.end_reservation(&address);
        }
    }

    /// Why an authenticated connection may no longer stay, under the current list. A
    /// certificate's own restrictions never change; its CA's line may.
    fn revocation(&self, c: &Connection, now: Instant) -> Option<Revoked> {
        let key = c.key.as_ref()?;
        let rules = match &c.login {
            Login::Key if !self.key_listed(key) => return Some(Revoked::KeyRemoved),
            Login::Key => self.config.rules_for(key),
            Login::Certificate {
                authority,
                principal,
                ..
            } => match self.config.authority(authority) {
                Some(rules) if rules.allows_principal(principal) => Some(rules),
                _ => return Some(Revoked::CertificateRevoked),
            },
        };
        let admitted = rules.is_none_or(|rules| rules.admits(c.peer.ip(), now));
        (!admitted).then_some(Revoked::NoLongerAdmitted)
    }

    /// Whether an owner of names may still hold them: its key is listed, or it is the identity
    /// of a principal a listed CA still admits.
    fn is_listed(&self, owner: &KeyFingerprint) -> bool {
        let by_authority = || {
            self.config.authorities().any(|(authority, rules)| {
                owner
                    .principal_of(authority)
                    .is_some_and(|principal| rules.allows_principal(principal))
            })
        };
        self.key_listed(owner) || by_authority()
    }

    /// Forgets a connection: its routes go at once, its names and ports stay reserved for its
    /// key for the grace period.
    /// Tells every authenticated session the server is going, and what happens to its names.
    fn stopping(&mut self) {
        if std::mem::replace(&mut self.stopping, true) {
            return;
        }
        let grace = self.config.name_grace().as_secs();
        let line = if grace == 0 {
            format!("{SERVER_RESTARTING}: this connection will close")
        } else {
            format!(
                "{SERVER_RESTARTING}: reconnect within {} to get your names and ports back",
                short_duration(grace)
            )
        };
        let users: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.key.is_some())
            .map(|(conn, _)| *conn)
            .collect();
        for conn in users {
            self.print(conn, OutputStream::Stderr, line.clone());
        }
    }

    fn drop_connection(&mut self, now: Instant, conn: ConnId) {
        if self.conns.remove(&conn).is_none() {
            return;
        }
        self.timers.cancel(&Timer::Auth(conn));
        self.timers.cancel(&Timer::Command(conn));
        self.with_forwards(now, |f, fx| {
            f.connection_ended(fx, conn);
            Ok(())
        });
    }

    /// Runs one step of the forwards, then what it leaves for the sessions: Forwarding lines,
    /// takeovers told to the sessions that lost an address, and a session ended by an error.
    fn with_forwards(
        &mut self,
        now: Instant,
        step: impl FnOnce(&mut Forwards, &mut Effects<'_>) -> Result<(), (ConnId, ForwardError)>,
    ) {
        let mut fx = Effects {
            now,
            config: &self.config,
            rng: &mut *self.rng,
            actions: &mut self.actions,
            timers: &mut self.timers,
            lines: Vec::new(),
            taken_over: Vec::new(),
        };
        let result = step(&mut self.forwards, &mut fx);
        let Effects {
            lines, taken_over, ..
        } = fx;
        for (conn, line) in lines {
            self.print(conn, OutputStream::Stdout, line);
        }
        for (old_conn, address) in taken_over {
            self.taken_over(now, old_conn, &address);
        }
        if let Err((conn, e)) = result {
            self.fail(now, conn, e.into());
        }
    }

    /// The same key took `address` on another connection: the old session is told, and a
    /// connection left with nothing to forward is closed.
    fn taken_over(&mut self, now: Instant, old_conn: ConnId, address: &Address) {
        let shown = match address {
            Address::Name(n) => n.to_string(),
            Address::Port(p) => format!("tcp port {p}"),
        };
        self.print(
            old_conn,
            OutputStream::Stderr,
            format!("{shown} was taken over by a new connection with the same key"),
        );
        if self.conns.contains_key(&old_conn) && self.forwards.count_of(old_conn) == 0 {
            self.close(old_conn, CLOSED_BY_SERVER.to_owned());
            self.drop_connection(now, old_conn);
        }
    }

    // ---- output -------------------------------------------------------------------------------

    fn reply(&mut self, conn: ConnId, request: RequestId, reply: Reply) {
        self.actions.push_back(Action::Reply {
            conn,
            request,
            reply,
        });
    }

    fn close(&mut self, conn: ConnId, message: String) {
        self.actions.push_back(Action::Close { conn, message });
    }

    /// Prints a line, or keeps it until the session channel opens.
    fn print(&mut self, conn: ConnId, stream: OutputStream, line: String) {
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
}

/// An operator's text made one printable line: control characters (a newline could forge a
/// second line in the user's terminal) become spaces, and it is cut at 200 characters.
fn one_line(text: &str) -> String {
    const MAX: usize = 200;
    text.chars()
        .take(MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The user-name rule: `v2` or any non-version name means our syntax; `v<digits>` otherwise is
/// refused, naming the version we speak.
fn version_error(user: &str) -> Option<SessionError> {
    let digits = user.strip_prefix('v')?;
    let is_version = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    (is_version && user != SYNTAX_VERSION)
        .then(|| SessionError::UnsupportedVersion(Shown::from(user)))
}

/// `90` as `90s`, `600` as `10m`, `7200` as `2h`: the largest unit that divides it.
fn short_duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
