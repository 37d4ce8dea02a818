//! A `Gateway` driven like a real adapter would drive it, with a fake clock and a seeded RNG, so
//! a test reads like the user's transcript (as quinn-proto's `tests/util.rs` `Pair`).
//!
//! The harness executes every action the way a simple adapter does: it answers each `Bind` with
//! `Bound` (or `BindFailed` for ports made to fail), feeds `ConnectionClosed` after each `Close`,
//! and records what each session shows. It panics at once on anything an adapter could not
//! execute: a reply to an unknown or already-answered request, output after `Exit`/`Close`, two
//! listeners on one port, a route for an address already routed, an `Unbind` of no listener.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tunnel_core::{
    Action, Address, CertificateRefusal, ConnId, EndpointId, Gateway, GatewayConfig, Input,
    KeyFingerprint, KeyList, Limits, OutputStream, Reply, RequestId, Route, UserCertificate,
    CLOSED_BY_SERVER,
};

/// Domain and public ports of the contract's dev server.
pub const DOMAIN: &str = "localhost";
pub const HTTP_PORT: u16 = 8080;
pub const HTTPS_PORT: u16 = 8443;

/// Inputs fed back by the adapter (bind answers, closes) before a call returns; more than this
/// means the core and the harness are feeding each other forever.
const MAX_STEPS: usize = 10_000;

/// The fingerprint tests use for a key called `name`.
pub fn key(name: &str) -> KeyFingerprint {
    KeyFingerprint::new(format!("SHA256:{name}"))
}

/// Builds a [`Harness`]; starts from the contract's dev defaults.
pub struct HarnessBuilder {
    config: GatewayConfig,
    rng: Option<Box<dyn RngCore + Send>>,
    seed: u64,
}

impl HarnessBuilder {
    pub fn name_grace(mut self, grace: Duration) -> Self {
        self.config = self.config.with_name_grace(grace);
        self
    }

    pub fn command_deadline(mut self, deadline: Duration) -> Self {
        self.config = self.config.with_command_deadline(deadline);
        self
    }

    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.with_auth_timeout(timeout);
        self
    }

    pub fn tcp_ports(mut self, range: RangeInclusive<u16>) -> Self {
        self.config = self.config.with_tcp_ports(range);
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.config = self.config.with_limits(limits);
        self
    }

    pub fn key_rules(mut self, key_name: &str, options: &str) -> Self {
        let rules = tunnel_core::KeyRules::from_options(
            options,
            Instant::now(),
            std::time::SystemTime::now(),
        )
        .expect("valid options");
        self.config = self.config.with_key_rules(key(key_name), rules);
        self
    }

    pub fn configure_quota(mut self, key: KeyFingerprint, quota: tunnel_core::KeyQuota) -> Self {
        self.config = self.config.with_key_quota(key, quota);
        self
    }

    /// The list an `authorized_keys` file gives, certificate authorities included.
    pub fn key_list(mut self, list: KeyList) -> Self {
        self.config = self.config.with_key_list(list);
        self
    }

    pub fn admin_keys(mut self, keys: &[&str]) -> Self {
        let keys = keys.iter().map(|k| key(k)).collect();
        self.config = self.config.with_admin_keys(keys);
        self
    }

    pub fn authorized_keys(mut self, keys: &[&str]) -> Self {
        let keys = keys.iter().map(|k| key(k)).collect();
        self.config = self.config.with_authorized_keys(Some(keys));
        self
    }

    /// The SSH port and host key the server's own page names.
    pub fn home(mut self, ssh_port: u16, host_key: &str) -> Self {
        self.config = self.config.with_home(ssh_port, host_key);
        self
    }

    /// Another domain or other public ports.
    pub fn server(mut self, domain: &str, http_port: u16, https_port: u16) -> Self {
        self.config = GatewayConfig::new(domain, http_port, https_port)
            .with_tcp_ports(self.config.tcp_ports().clone())
            .with_name_grace(self.config.name_grace())
            .with_command_deadline(self.config.command_deadline())
            .with_auth_timeout(self.config.auth_timeout())
            .with_authorized_keys(self.config.authorized_keys().cloned())
            .with_limits(self.config.limits().clone());
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Replaces the seeded RNG (to force random-name collisions).
    pub fn rng(mut self, rng: Box<dyn RngCore + Send>) -> Self {
        self.rng = Some(rng);
        self
    }

    pub fn build(self) -> Harness {
        let rng = self
            .rng
            .unwrap_or_else(|| Box::new(ChaCha8Rng::seed_from_u64(self.seed)));
        let now = Instant::now();
        Harness {
            gw: Gateway::new(self.config, rng),
            start: now,
            now,
            next_conn: 0,
            next_request: 0,
            failing_ports: BTreeSet::new(),
            failures_unheard: BTreeSet::new(),
            inbox: VecDeque::new(),
            conns: BTreeMap::new(),
            requests: BTreeMap::new(),
            replies: BTreeMap::new(),
            listeners: BTreeMap::new(),
            routes: BTreeMap::new(),
            log: Vec::new(),
            binds: 0,
            failed_binds: 0,
            unbinds: 0,
        }
    }
}

/// What one session showed, as the user's terminal would.
#[derive(Debug, Default)]
pub struct Session {
    pub peer: Option<SocketAddr>,
    pub key: Option<KeyFingerprint>,
    pub authenticated_at: Option<Instant>,
    pub auth_answer: Option<bool>,
    /// The answer to the session channel open, once asked.
    pub session_answer: Option<bool>,
    pub command_sent: bool,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub exit_status: Option<u32>,
    /// The connection ended (either side).
    pub closed: bool,
    /// The gateway asked for the close.
    pub closed_by_server: bool,
    /// The disconnect message the server closed with.
    pub disconnect_message: Option<String>,
    /// Why certificate logins were refused, as the server log shows it.
    pub certificate_refusals: Vec<CertificateRefusal>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Forward { bind: String, port: u32 },
    Cancel { bind: String, port: u32 },
}

#[derive(Clone, Debug)]
pub struct Request {
    pub conn: ConnId,
    pub kind: RequestKind,
}

pub struct Harness {
    pub gw: Gateway,
    pub start: Instant,
    pub now: Instant,
    next_conn: u64,
    next_request: u64,
    failing_ports: BTreeSet<u16>,
    /// Endpoints whose `BindFailed` is queued but not yet fed.
    failures_unheard: BTreeSet<EndpointId>,
    /// Inputs the adapter feeds back (bind answers, closes), in order.
    inbox: VecDeque<Input>,
    conns: BTreeMap<ConnId, Session>,
    requests: BTreeMap<RequestId, Request>,
    replies: BTreeMap<RequestId, Reply>,
    /// Open listeners: endpoint -> port.
    listeners: BTreeMap<EndpointId, u16>,
    /// Live routes as the adapter knows them from RouteAdded/RouteRemoved.
    routes: BTreeMap<EndpointId, Arc<Route>>,
    /// Every action, in order.
    pub log: Vec<Action>,
    pub binds: usize,
    pub failed_binds: usize,
    pub unbinds: usize,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            config: GatewayConfig::new(DOMAIN, HTTP_PORT, HTTPS_PORT),
            rng: None,
            seed: 7,
        }
    }

    /// Dev defaults.
    pub fn new() -> Self {
        Self::builder().build()
    }

    pub fn config(&self) -> &GatewayConfig {
        self.gw.config()
    }

    // ---- the clock --------------------------------------------------------------------------

    /// Moves the fake clock forward, running every timer that becomes due, in order.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..MAX_STEPS {
            match self.gw.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    let now = self.now;
                    self.step(|gw| gw.handle_timeout(now));
                    self.run_until_idle();
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        panic!("timers kept firing: more than {MAX_STEPS} in one advance");
    }

    /// Time since the harness started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    // ---- the user's side --------------------------------------------------------------------

    pub fn connect(&mut self) -> ConnId {
        let n = self.next_conn + 1;
        let port = 40000 + (n % 20000) as u16;
        self.connect_from(SocketAddr::from(([203, 0, 113, 7], port)))
    }

    pub fn connect_from(&mut self, peer: SocketAddr) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId::from_raw(self.next_conn);
        self.conns.insert(
            conn,
            Session {
                peer: Some(peer),
                ..Session::default()
            },
        );
        self.feed(Input::ConnectionOpened { conn, peer });
        conn
    }

    /// Public-key auth as `user` with the key called `key`; true if the gateway accepted it.
    pub fn auth(&mut self, conn: ConnId, user: &str, key_name: &str) -> bool {
        let before = self.log.len();
        self.feed(Input::AuthRequested {
            conn,
            user: user.to_owned(),
            key: key(key_name),
        });
        let answer = self.log[before..].iter().find_map(|a| match a {
            Action::Auth { conn: c, accepted } if *c == conn => Some(*accepted),
            _ => None,
        });
        let accepted = answer.expect("every auth request is answered");
        if accepted {
            let now = self.now;
            let s = self.session_mut(conn);
            if s.authenticated_at.is_none() {
                s.key = Some(key(key_name));
                s.authenticated_at = Some(now);
            }
        }
        accepted
    }

    /// Public-key auth as `user` with a certificate; true if the gateway accepted it.
    pub fn auth_certificate(
        &mut self,
        conn: ConnId,
        user: &str,
        certificate: UserCertificate,
    ) -> bool {
        let before = self.log.len();
        self.feed(Input::CertificateAuthRequested {
            conn,
            user: user.to_owned(),
            certificate,
        });
        let answer = self.log[before..].iter().find_map(|a| match a {
            Action::Auth { conn: c, accepted } if *c == conn => Some(*accepted),
            _ => None,
        });
        let accepted = answer.expect("every auth request is answered");
        if accepted {
            let now = self.now;
            let identity = self.gw.identity(conn).cloned();
            let s = self.session_mut(conn);
            if s.authenticated_at.is_none() {
                s.key = identity;
                s.authenticated_at = Some(now);
            }
        }
        accepted
    }

    /// A connection authenticated as `v2` with the key called `key_name`.
    pub fn login(&mut self, key_name: &str) -> ConnId {
        let conn = self.connect();
        assert!(self.auth(conn, "v2", key_name), "{key_name} refused");
        conn
    }

    /// `tcpip-forward` (one `-R`).
    pub fn forward(&mut self, conn: ConnId, bind: &str, port: u32) -> RequestId {
        let request = self.new_request(
            conn,
            RequestKind::Forward {
                bind: bind.to_owned(),
                port,
            },
        );
        self.feed(Input::ForwardRequested {
            conn,
            request,
            bind_address: bind.to_owned(),
            port,
        });
        request
    }

    /// `cancel-tcpip-forward`.
    pub fn cancel(&mut self, conn: ConnId, bind: &str, port: u32) -> RequestId {
        let request = self.new_request(
            conn,
            RequestKind::Cancel {
                bind: bind.to_owned(),
                port,
            },
        );
        self.feed(Input::ForwardCancelled {
            conn,
            request,
            bind_address: bind.to_owned(),
            port,
        });
        request
    }

    /// SSH opens no channel before authentication, so only then is the command "sent"; like
    /// OpenSSH, it opens the session channel first.
    fn mark_command_sent(&mut self, conn: ConnId) {
        if self.session(conn).session_answer.is_none() {
            self.open_session(conn);
        }
        let s = self.session_mut(conn);
        if s.authenticated_at.is_some() {
            s.command_sent = true;
        }
    }

    /// Asks to open a session channel; true if the gateway accepted.
    pub fn open_session(&mut self, conn: ConnId) -> bool {
        let before = self.log.len();
        self.feed(Input::SessionRequested { conn });
        let answer = self.log[before..].iter().find_map(|a| match a {
            Action::SessionAnswer { conn: c, accepted } if *c == conn => Some(*accepted),
            _ => None,
        });
        let accepted = answer.expect("every session channel open is answered");
        self.session_mut(conn).session_answer = Some(accepted);
        accepted
    }

    pub fn exec(&mut self, conn: ConnId, command: &str) {
        self.mark_command_sent(conn);
        self.feed(Input::ExecRequested {
            conn,
            command: command.to_owned(),
        });
    }

    pub fn shell(&mut self, conn: ConnId) {
        self.mark_command_sent(conn);
        self.feed(Input::ShellRequested { conn });
    }

    /// The client closes the session channel.
    pub fn close_session(&mut self, conn: ConnId) {
        self.feed(Input::SessionClosed { conn });
    }

    /// The connection ends (client gone, TCP reset, ...).
    pub fn close(&mut self, conn: ConnId) {
        let s = self.session_mut(conn);
        if s.closed {
            return;
        }
        s.closed = true;
        self.feed(Input::ConnectionClosed { conn });
    }

    /// `ssh -R b1:p1 -R b2:p2 ... HOST COMMAND` as `key_name`: connect, auth, forwards, then
    /// the command (`""` sends `shell`, as ssh does with no command).
    pub fn tunnel(
        &mut self,
        key_name: &str,
        forwards: &[(&str, u32)],
        command: &str,
    ) -> (ConnId, Vec<RequestId>) {
        let conn = self.login(key_name);
        let requests = forwards
            .iter()
            .map(|(bind, port)| self.forward(conn, bind, *port))
            .collect();
        if command.is_empty() {
            self.shell(conn);
        } else {
            self.exec(conn, command);
        }
        (conn, requests)
    }

    /// Makes the host refuse to bind these ports.
    pub fn fail_binds_on(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.failing_ports.extend(ports);
    }

    pub fn allow_binds_on(&mut self, ports: impl IntoIterator<Item = u16>) {
        for p in ports {
            self.failing_ports.remove(&p);
        }
    }

    /// Feeds an input as the adapter would and runs everything it causes.
    pub fn feed(&mut self, input: Input) {
        let now = self.now;
        self.step(move |gw| gw.handle(now, input));
    }

    // ---- what the user sees -----------------------------------------------------------------

    pub fn session(&self, conn: ConnId) -> &Session {
        self.conns.get(&conn).expect("a connection of this harness")
    }

    pub fn stdout(&self, conn: ConnId) -> &[String] {
        &self.session(conn).stdout
    }

    pub fn stderr(&self, conn: ConnId) -> &[String] {
        &self.session(conn).stderr
    }

    pub fn exit_status(&self, conn: ConnId) -> Option<u32> {
        self.session(conn).exit_status
    }

    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.session(conn).closed
    }

    pub fn reply(&self, request: RequestId) -> Option<Reply> {
        self.replies.get(&request).copied()
    }

    /// The Forwarding lines of a session, in order.
    pub fn forwarding_lines(&self, conn: ConnId) -> Vec<&str> {
        self.stdout(conn)
            .iter()
            .map(String::as_str)
            .filter(|l| l.starts_with("Forwarding "))
            .collect()
    }

    /// Open listeners' ports.
    pub fn bound_ports(&self) -> BTreeSet<u16> {
        self.listeners.values().copied().collect()
    }

    /// Live routes, as RouteAdded/RouteRemoved told the adapter.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    pub fn routes_of(&self, conn: ConnId) -> Vec<Arc<Route>> {
        self.routes
            .values()
            .filter(|r| r.conn == conn)
            .cloned()
            .collect()
    }

    /// The host name of a connection's only named route.
    pub fn host_of(&self, conn: ConnId) -> String {
        let names: Vec<String> = self
            .routes_of(conn)
            .iter()
            .filter_map(|r| match &r.address {
                Address::Name(n) => Some(n.to_string()),
                Address::Port(_) => None,
            })
            .collect();
        assert_eq!(
            names.len(),
            1,
            "expected one named route on {conn}: {names:?}"
        );
        names[0].clone()
    }

    /// The tcp port of a connection's only tcp route.
    pub fn port_of(&self, conn: ConnId) -> u16 {
        let ports: Vec<u16> = self
            .routes_of(conn)
            .iter()
            .filter_map(|r| match r.address {
                Address::Port(p) => Some(p),
                Address::Name(_) => None,
            })
            .collect();
        assert_eq!(
            ports.len(),
            1,
            "expected one tcp route on {conn}: {ports:?}"
        );
        ports[0]
    }

    /// Every action since `mark` (an index into `log`).
    pub fn actions_since(&self, mark: usize) -> &[Action] {
        &self.log[mark..]
    }

    /// Drains whatever actions are queued (normally none: every call drains).
    pub fn drain(&mut self) -> Vec<Action> {
        let mark = self.log.len();
        self.drain_into_model();
        self.run_until_idle();
        self.log[mark..].to_vec()
    }

    /// Runs the inputs the adapter owes the gateway (bind answers, closes) until none is left.
    pub fn run_until_idle(&mut self) {
        for _ in 0..MAX_STEPS {
            let Some(input) = self.inbox.pop_front() else {
                return;
            };
            if let Input::BindFailed { endpoint } = &input {
                self.failures_unheard.remove(endpoint);
            }
            let now = self.now;
            self.step(|gw| gw.handle(now, input));
        }
        panic!("the gateway and the adapter fed each other more than {MAX_STEPS} inputs");
    }

    // ---- invariants -------------------------------------------------------------------------

    /// Everything that must hold between any two inputs.
    pub fn check_invariants(&self) {
        let (lo, hi) = (
            *self.config().tcp_ports().start(),
            *self.config().tcp_ports().end(),
        );
        assert_eq!(self.gw.route_count(), self.routes.len(), "route count");
        let holders: BTreeMap<&Address, (&KeyFingerprint, bool)> = self
            .gw
            .holders()
            .map(|(a, k, live)| (a, (k, live)))
            .collect();
        for route in self.routes.values() {
            let session = self.session(route.conn);
            assert!(
                !session.closed,
                "{} routed to closed {}",
                route.endpoint, route.conn
            );
            let owner = session.key.as_ref().expect("routes need auth");
            assert_eq!(
                holders.get(&route.address),
                Some(&(owner, true)),
                "{:?} must be held live by {owner}",
                route.address
            );
            let found = match &route.address {
                Address::Name(n) => self.gw.route_by_host(n.as_str()),
                Address::Port(p) => {
                    assert!((lo..=hi).contains(p), "port {p} outside {lo}-{hi}");
                    assert_eq!(
                        self.listeners.get(&route.endpoint),
                        Some(p),
                        "a tcp route has its listener"
                    );
                    self.gw.route_by_port(*p)
                }
            };
            assert_eq!(
                found.map(|r| r.endpoint),
                Some(route.endpoint),
                "query finds the route"
            );
            // The forwarded-tcpip channel names the forward as the client registered it.
            let granted = self.requests.iter().any(|(id, r)| {
                r.conn == route.conn
                    && match (&r.kind, self.replies.get(id)) {
                        (
                            RequestKind::Forward { bind, port },
                            Some(Reply::Granted { port: got }),
                        ) => {
                            *bind == route.target.bind_address
                                && match got {
                                    None => *port == route.target.port,
                                    Some(p) => *port == 0 && *p == route.target.port,
                                }
                        }
                        _ => false,
                    }
            });
            assert!(
                granted,
                "{} ({:?}) has no granted forward {}:{} on {}",
                route.endpoint,
                route.address,
                route.target.bind_address,
                route.target.port,
                route.conn
            );
        }
        let ports: Vec<u16> = self.listeners.values().copied().collect();
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(ports.len(), unique.len(), "two listeners on one port");
        for (id, r) in &self.requests {
            let s = self.session(r.conn);
            let settled = s.command_sent
                || s.authenticated_at
                    .is_some_and(|at| self.now >= at + self.config().command_deadline());
            if !s.closed && settled {
                assert!(self.replies.contains_key(id), "{id} ({r:?}) never answered");
            }
        }
        assert!(
            self.gw.held_port_count() >= self.routes_by_port(),
            "every tcp route holds its port"
        );
        // No key holds a name above or below another key's (cookie scoping).
        let names: Vec<(String, &KeyFingerprint)> = holders
            .iter()
            .filter_map(|(a, (k, _))| match a {
                Address::Name(n) => Some((n.to_string(), *k)),
                Address::Port(_) => None,
            })
            .collect();
        for (a, ka) in &names {
            for (b, kb) in &names {
                assert!(
                    ka == kb || !a.ends_with(&format!(".{b}")),
                    "{a} ({ka}) is under {b} ({kb})"
                );
            }
        }
    }

    fn routes_by_port(&self) -> usize {
        self.routes
            .values()
            .filter(|r| matches!(r.address, Address::Port(_)))
            .count()
    }

    /// Closes every connection, waits out every grace and deadline, and checks that nothing is
    /// left: no connection, endpoint, route, held port, reservation or timer, and every listener
    /// that was bound has been unbound.
    pub fn assert_no_leaks(&mut self) {
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, s)| !s.closed)
            .map(|(c, _)| *c)
            .collect();
        for conn in open {
            self.close(conn);
        }
        let c = self.config();
        let wait =
            c.name_grace() + c.command_deadline() + c.auth_timeout() + Duration::from_secs(1);
        self.advance(wait);
        self.check_invariants();
        assert_eq!(self.gw.connection_count(), 0, "connections");
        assert_eq!(self.gw.endpoint_count(), 0, "endpoints");
        assert_eq!(self.gw.route_count(), 0, "routes");
        assert_eq!(self.gw.held_port_count(), 0, "held ports");
        assert_eq!(self.gw.reservation_count(), 0, "reservations");
        assert_eq!(self.gw.timer_count(), 0, "timers");
        assert_eq!(self.gw.poll_timeout(), None, "no deadline pending");
        assert_eq!(self.gw.holders().count(), 0, "holders");
        assert!(self.routes.is_empty(), "routes left: {:?}", self.routes);
        assert!(
            self.listeners.is_empty(),
            "listeners left: {:?}",
            self.listeners
        );
        assert_eq!(
            self.binds,
            self.failed_binds + self.unbinds,
            "every successful Bind is matched by one Unbind"
        );
    }

    // ---- the adapter ------------------------------------------------------------------------

    fn new_request(&mut self, conn: ConnId, kind: RequestKind) -> RequestId {
        self.next_request += 1;
        let id = RequestId::from_raw(self.next_request);
        self.requests.insert(id, Request { conn, kind });
        id
    }

    fn session_mut(&mut self, conn: ConnId) -> &mut Session {
        self.conns
            .get_mut(&conn)
            .expect("a connection of this harness")
    }

    /// One call into the gateway, then its actions executed and checked. A name reserved for
    /// one key before the call is never routed for another by it.
    fn step(&mut self, call: impl FnOnce(&mut Gateway)) {
        let reserved: BTreeMap<Address, KeyFingerprint> = self
            .gw
            .holders()
            .filter(|(_, _, live)| !live)
            .map(|(a, k, _)| (a.clone(), k.clone()))
            .collect();
        let mark = self.log.len();
        call(&mut self.gw);
        self.drain_into_model();
        for action in &self.log[mark..] {
            if let Action::RouteAdded(route) = action {
                if let Some(owner) = reserved.get(&route.address) {
                    let key = self.session(route.conn).key.as_ref();
                    assert_eq!(
                        key,
                        Some(owner),
                        "{:?} was reserved for {owner} but went to {:?}",
                        route.address,
                        key
                    );
                }
            }
        }
        self.run_until_idle();
    }

    fn drain_into_model(&mut self) {
        while let Some(action) = self.gw.poll_action() {
            self.execute(&action);
            self.log.push(action);
        }
    }

    fn execute(&mut self, action: &Action) {
        match action {
            Action::Auth { conn, accepted } => {
                self.session_mut(*conn).auth_answer = Some(*accepted);
            }
            Action::SessionAnswer { .. } => {}
            Action::CertificateRefused { conn, reason } => {
                self.session_mut(*conn)
                    .certificate_refusals
                    .push(reason.clone());
            }
            Action::Reply {
                conn,
                request,
                reply,
            } => {
                let r = self
                    .requests
                    .get(request)
                    .unwrap_or_else(|| panic!("reply to {request}, never sent"));
                assert_eq!(r.conn, *conn, "reply to {request} on the wrong connection");
                if let (RequestKind::Forward { port, .. }, Reply::Granted { port: got }) =
                    (&r.kind, reply)
                {
                    assert_eq!(
                        *port == 0,
                        got.is_some(),
                        "only a port-0 forward's reply carries a port: {r:?} {reply:?}"
                    );
                }
                let previous = self.replies.insert(*request, *reply);
                assert!(previous.is_none(), "{request} answered twice");
            }
            Action::Bind { endpoint, port } => {
                self.binds += 1;
                let range = self.config().tcp_ports().clone();
                assert!(range.contains(port), "bind outside the range: {port}");
                assert!(
                    !self.listeners.contains_key(endpoint),
                    "{endpoint} bound twice"
                );
                if self.failing_ports.contains(port) {
                    self.failed_binds += 1;
                    self.failures_unheard.insert(*endpoint);
                    self.inbox.push_back(Input::BindFailed {
                        endpoint: *endpoint,
                    });
                } else {
                    assert!(
                        !self.listeners.values().any(|p| p == port),
                        "port {port} bound while another listener holds it"
                    );
                    self.listeners.insert(*endpoint, *port);
                    self.inbox.push_back(Input::Bound {
                        endpoint: *endpoint,
                    });
                }
            }
            Action::Unbind { endpoint, port } => {
                // The gateway may drop an endpoint before it hears that its bind failed.
                if self.failures_unheard.remove(endpoint) {
                    return;
                }
                self.unbinds += 1;
                let had = self.listeners.remove(endpoint);
                assert_eq!(
                    had,
                    Some(*port),
                    "Unbind of {endpoint}:{port}, not listening"
                );
            }
            Action::RouteAdded(route) => {
                assert!(
                    !self.session(route.conn).closed,
                    "route for closed {}",
                    route.conn
                );
                assert!(
                    !self.routes.values().any(|r| r.address == route.address),
                    "{:?} routed twice",
                    route.address
                );
                let previous = self.routes.insert(route.endpoint, Arc::clone(route));
                assert!(previous.is_none(), "{} added twice", route.endpoint);
            }
            Action::RouteRemoved(endpoint) => {
                let had = self.routes.remove(endpoint);
                assert!(had.is_some(), "RouteRemoved({endpoint}) for no route");
            }
            Action::Print { conn, stream, line } => {
                let s = self.session_mut(*conn);
                assert!(
                    !s.closed && s.exit_status.is_none(),
                    "print after exit or close on {conn}: {line}"
                );
                match stream {
                    OutputStream::Stdout => s.stdout.push(line.clone()),
                    OutputStream::Stderr => s.stderr.push(line.clone()),
                }
            }
            Action::Exit { conn, status } => {
                let s = self.session_mut(*conn);
                assert!(
                    !s.closed && s.exit_status.is_none(),
                    "exit after exit or close on {conn}"
                );
                s.exit_status = Some(*status);
            }
            Action::Close { conn, message } => {
                let s = self.session_mut(*conn);
                assert!(!s.closed, "Close of {conn}, already closed");
                s.closed = true;
                s.closed_by_server = true;
                s.disconnect_message = Some(message.clone());
                // OpenSSH shows a disconnect message on stderr ("Received disconnect from ...");
                // the server's plain one follows an exit status, which makes the client leave
                // first, so the user reads only a message that says why.
                if message != CLOSED_BY_SERVER {
                    s.stderr.push(message.clone());
                }
                self.inbox
                    .push_back(Input::ConnectionClosed { conn: *conn });
            }
            other => panic!("an action this harness does not know: {other:?}"),
        }
    }
}
