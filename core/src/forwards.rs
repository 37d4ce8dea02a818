//! Forwards becoming endpoints: port rules, names, ownership claims, tcp binding, cancellation
//! and removal.
//!
//! Ordering, as stock OpenSSH speaks (checked with `ssh -v`): right after authentication it sends
//! one `tcpip-forward` global request per `-R` with want-reply (RFC 4254 §7.1), then opens the
//! session channel and sends `exec` or `shell` (§6.5) without waiting for the replies. So the
//! command that says what a forward is for arrives after the forward. Forwards wait in
//! `Connection::pending` until the command is known or the command deadline passes; their
//! replies are held or sent at once per [`ReplyTiming`](crate::ReplyTiming).

use std::sync::Arc;
use std::time::Instant;

use crate::action::{Action, Reply, OutputStream};
use crate::command::{Command, EndpointKind};
use crate::endpoints::{ChannelTarget, Endpoint, EndpointPolicy, EndpointState, Route};
use crate::error::ForwardError;
use crate::gateway::{CLOSED_BY_SERVER, CommandState, EarlyListener, Gateway, PendingForward, PendingReply, Removal};
use crate::ids::{ConnId, EndpointId, KeyFingerprint, RequestId};
use crate::names::{random_name, requested_name};
use crate::ownership::{Address, Claim, ReconnectKey};
use crate::timers::Timer;

/// The kind a forward gets when no command says: the contract's port default.
fn default_kind(port: u32) -> EndpointKind {
    match port {
        80 | 443 => EndpointKind::Http,
        _ => EndpointKind::Tcp,
    }
}

impl Gateway {
    pub(crate) fn forward_requested(
        &mut self,
        now: Instant,
        conn: ConnId,
        request: RequestId,
        bind_address: String,
        port: u32,
    ) {
        let immediate = true;
        let refusal = match self.conns.get(&conn) {
            None => Some(None),
            Some(c) if c.key.is_none() => Some(Some(ForwardError::NotAuthenticated)),
            // The session's error is told with the command; a grant lets the client get that far
            // even with ExitOnForwardFailure.
            Some(c) if c.fatal.is_some() && immediate => {
                let http_port = u32::from(self.config.http_port());
                self.reply(
                    conn,
                    request,
                    Reply::Granted {
                        port: (port == 0).then_some(http_port),
                    },
                );
                return;
            }
            Some(c) if c.fatal.is_some() => Some(None),
            Some(c) => {
                let limit = self.config.limits().endpoints_per_connection();
                // Port 0 asks for a fresh port each time: `-R 0:localhost:22 -R 0:localhost:80`
                // are two forwards.
                let duplicate = port != 0
                    && (c
                        .pending
                        .iter()
                        .any(|f| f.bind_address == bind_address && f.port == port)
                        || c.endpoints.iter().any(|e| {
                            self.endpoints.get(e).is_some_and(|e| {
                                e.route.target.bind_address == bind_address
                                    && e.requested_port == port
                            })
                        }));
                if c.pending.len() + c.endpoints.len() >= limit {
                    Some(Some(ForwardError::TooManyEndpoints(limit)))
                } else if duplicate {
                    Some(Some(ForwardError::Duplicate(
                        bind_address.as_str().into(),
                        port,
                    )))
                } else {
                    None
                }
            }
        };
        if let Some(error) = refusal {
            self.reply(conn, request, Reply::Refused);
            if let Some(e) = error {
                self.fail(now, conn, e.into());
            }
            return;
        }
        let c = self.conns.get(&conn).expect("checked above");
        let forward = PendingForward {
            request,
            bind_address,
            port,
            reply: PendingReply::Held,
        };
        if let CommandState::Settled { command, .. } = &c.command {
            let command = command.clone();
            if let Err(e) = self.resolve_forward(now, conn, forward, command.as_ref()) {
                self.reply(conn, request, Reply::Refused);
                self.fail(now, conn, e.into());
            }
            return;
        }
        let forward = self.answer_early(conn, forward);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pending.push(forward);
        }
    }

    /// [`ReplyTiming::Immediate`]: answer before the command. A forward that may be tcp (port 0,
    /// or a port in the range) gets an early listener and its reply once that is bound, so the
    /// port the reply names is one the host really gave us. Every other forward is granted at
    /// once: one the command will refuse is refused with the command, where the user reads why.
    fn answer_early(&mut self, conn: ConnId, mut forward: PendingForward) -> PendingForward {
        let key = self.conns[&conn].key.clone().expect("forwards need auth");
        let mut refused = None;
        let early_port = match forward.port {
            0 => {
                let reconnect = ReconnectKey {
                    owner: key,
                    bind_address: forward.bind_address.clone(),
                    port: 0,
                    kind: EndpointKind::Tcp,
                };
                match self.ownership.reserved_for(&reconnect).cloned() {
                    Some(address @ Address::Port(p)) => {
                        // Ours now: its reservation must not expire under the early listener.
                        self.end_reservation(&address, &reconnect.owner);
                        Some(p)
                    }
                    _ => self.ports.allocate_tcp_port().ok(),
                }
            }
            80 | 443 => {
                // Always http or tls: a name held by another key is known to fail already.
                if let Ok(Some(name)) = requested_name(&forward.bind_address, self.config.domain()) {
                    refused = match self.ownership.check(&Address::Name(name.clone()), &key) {
                        Claim::Taken => Some(ForwardError::NameTaken(name.to_string())),
                        Claim::Reserved => Some(ForwardError::NameReserved(name.to_string())),
                        _ => None,
                    };
                }
                None
            }
            p if self.ports.contains(p) => {
                let port = p as u16;
                let own_early = self.conns[&conn].pending.iter().any(|f| {
                    matches!(&f.reply, PendingReply::Sent { early: Some(e), .. } if e.port == port)
                });
                match self.ownership.check(&Address::Port(port), &key) {
                    Claim::Free if own_early => {
                        let bind = forward.bind_address.as_str().into();
                        refused = Some(ForwardError::Duplicate(bind, p));
                        None
                    }
                    Claim::Free if self.ports.take(port) => Some(port),
                    Claim::Free | Claim::Taken => {
                        refused = Some(ForwardError::PortInUse(port));
                        None
                    }
                    Claim::Reserved => {
                        refused = Some(ForwardError::PortReserved(port));
                        None
                    }
                    // The key's own port (reserved, or live elsewhere) is bound when settled.
                    Claim::Reclaimed { .. } | Claim::TakeOver { .. } => None,
                }
            }
            _ => None,
        };
        let early = early_port.map(|port| {
            let endpoint = self.next_endpoint_id();
            self.early_listeners.insert(endpoint, conn);
            self.actions.push_back(Action::Bind { endpoint, port });
            EarlyListener {
                endpoint,
                port,
                bound: false,
                attempts: 1,
            }
        });
        let channel_port = match (forward.port, early) {
            (0, Some(early)) => u32::from(early.port),
            // With the range exhausted only http can succeed: answer with its port.
            (0, None) => u32::from(self.config.http_port()),
            (p, _) => p,
        };
        if early.is_none() {
            let port = (forward.port == 0).then_some(channel_port);
            self.reply(conn, forward.request, Reply::Granted { port });
        }
        forward.reply = PendingReply::Sent {
            channel_port,
            early,
            refused,
        };
        forward
    }

    /// The adapter bound (or could not bind) an early listener.
    pub(crate) fn early_bind_result(&mut self, endpoint: EndpointId, bound: bool) -> bool {
        let Some(&conn) = self.early_listeners.get(&endpoint) else {
            return false;
        };
        let bind_attempts = self.config.limits().bind_attempts();
        let c = self
            .conns
            .get_mut(&conn)
            .expect("early listeners go with their connection");
        let forward = c
            .pending
            .iter_mut()
            .find(|f| matches!(&f.reply, PendingReply::Sent { early: Some(e), .. } if e.endpoint == endpoint))
            .expect("an early listener belongs to one pending forward");
        let PendingReply::Sent {
            channel_port,
            early: Some(early),
            ..
        } = &mut forward.reply
        else {
            unreachable!("matched above");
        };
        let (request, requested) = (forward.request, forward.port);
        if bound {
            early.bound = true;
            self.ports.mark_bound(early.port);
            let port = (requested == 0).then_some(*channel_port);
            self.reply(conn, request, Reply::Granted { port });
            return true;
        }
        let failed = early.port;
        self.ports.mark_host_busy(failed);
        self.ports.release(failed);
        let next = if requested == 0 && early.attempts < bind_attempts {
            self.ports.allocate_tcp_port().ok()
        } else {
            None
        };
        match next {
            Some(port) => {
                early.port = port;
                early.attempts += 1;
                *channel_port = u32::from(port);
                self.actions.push_back(Action::Bind { endpoint, port });
            }
            None => {
                // Granted all the same: the session ends with the reason once it can be read.
                self.early_listeners.remove(&endpoint);
                forward.reply = PendingReply::Sent {
                    channel_port: u32::from(failed),
                    early: None,
                    refused: Some(ForwardError::BindFailed(failed)),
                };
                let port = (requested == 0).then_some(u32::from(failed));
                self.reply(conn, request, Reply::Granted { port });
            }
        }
        true
    }

    /// Turns a forward into an endpoint under `command`, or says why it cannot be one.
    pub(crate) fn resolve_forward(
        &mut self,
        now: Instant,
        conn: ConnId,
        forward: PendingForward,
        command: Option<&Command>,
    ) -> Result<(), ForwardError> {
        let (channel_port, early, held) = match forward.reply {
            PendingReply::Held => (forward.port, None, Some(forward.request)),
            PendingReply::Sent {
                channel_port,
                early,
                ..
            } => (channel_port, early, None),
        };
        if let Some(early) = early {
            self.early_listeners.remove(&early.endpoint);
        }
        let result = self.create_endpoint(now, conn, &forward, command, channel_port, early, held);
        if result.is_err() {
            if let Some(early) = early {
                self.release_early(early);
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn create_endpoint(
        &mut self,
        now: Instant,
        conn: ConnId,
        forward: &PendingForward,
        command: Option<&Command>,
        channel_port: u32,
        early: Option<EarlyListener>,
        held_reply: Option<RequestId>,
    ) -> Result<(), ForwardError> {
        let provisional = early.map(|e| e.port);
        let policy = match command {
            Some(c) => EndpointPolicy::from_command(c).expect("help never creates endpoints"),
            None => EndpointPolicy::default_for(default_kind(forward.port)),
        };
        let kind = policy.kind();
        let port_ok = match kind {
            EndpointKind::Http => matches!(forward.port, 0 | 80 | 443),
            EndpointKind::Tls => matches!(forward.port, 0 | 443),
            EndpointKind::Tcp => forward.port == 0 || self.ports.contains(forward.port),
        };
        if !port_ok {
            return Err(ForwardError::PortNotAllowed {
                kind,
                port: forward.port,
                tcp_range: self.ports.bounds(),
            });
        }
        // The client was told no; the port coming free since cannot make that a yes.
        if let PendingReply::Sent {
            refused: Some(e), ..
        } = &forward.reply
        {
            return Err(e.clone());
        }
        let key = self.conns[&conn].key.clone().expect("forwards need auth");
        let reconnect = ReconnectKey {
            owner: key.clone(),
            bind_address: forward.bind_address.clone(),
            port: forward.port,
            kind,
        };
        let (address, reconnect) = match kind {
            EndpointKind::Tcp => self.claim_tcp_port(&key, forward.port, provisional, reconnect)?,
            EndpointKind::Http | EndpointKind::Tls => {
                self.claim_name(&key, &forward.bind_address, kind, reconnect)?
            }
        };
        // A held reply to a port-0 forward tells the client the port it will be known by.
        let channel_port = match (forward.port, held_reply, &address) {
            (0, Some(_), Address::Port(p)) => u32::from(*p),
            (0, Some(_), _) if kind == EndpointKind::Tls => u32::from(self.config.https_port()),
            (0, Some(_), _) => u32::from(self.config.http_port()),
            _ => channel_port,
        };
        let claim = self.ownership.check(&address, &key);
        // The same address spelled twice on one connection (`app` and `app.localhost`, or 80
        // and 443): taking it over from itself would end the connection under us.
        if matches!(claim, Claim::TakeOver { conn: holder, .. } if holder == conn) {
            return Err(ForwardError::Duplicate(
                forward.bind_address.as_str().into(),
                forward.port,
            ));
        }
        // A tcp forward keeps its early listener: same id, same port, maybe bound already.
        // Past every check, so an error leaves the listener to the caller to release once.
        let early = match early {
            Some(e) if address == Address::Port(e.port) => Some(e),
            Some(e) => {
                self.release_early(e);
                None
            }
            None => None,
        };
        let endpoint = match early {
            Some(e) => e.endpoint,
            None => self.next_endpoint_id(),
        };
        if let Claim::TakeOver {
            conn: old_conn,
            endpoint: old,
        } = claim
        {
            self.take_over(now, old_conn, old, &address);
        }
        self.ownership
            .hold(address.clone(), key, conn, endpoint, reconnect);
        let route = Route {
            endpoint,
            conn,
            address: address.clone(),
            target: ChannelTarget {
                bind_address: forward.bind_address.clone(),
                port: channel_port,
            },
            policy,
            visitor_limit: self.config.limits().visitors_per_endpoint(),
        };
        let state = match (&address, early) {
            (Address::Port(_), Some(e)) if e.bound => EndpointState::Live,
            (Address::Port(_), Some(e)) => EndpointState::Binding {
                attempts: e.attempts,
            },
            (Address::Port(_), None) => EndpointState::Binding { attempts: 1 },
            (Address::Name(_), _) => EndpointState::Live,
        };
        let live = state == EndpointState::Live;
        self.endpoints.insert(
            endpoint,
            Endpoint {
                route: Arc::new(route),
                requested_port: forward.port,
                held_reply,
                state,
            },
        );
        self.conns
            .get_mut(&conn)
            .expect("caller holds a live connection")
            .endpoints
            .insert(endpoint);
        match address {
            _ if live => self.go_live(endpoint),
            Address::Port(port) if early.is_none() => {
                self.actions.push_back(Action::Bind { endpoint, port })
            }
            // The early listener's bind is under way; its answer makes the endpoint live.
            _ => {}
        }
        Ok(())
    }

    /// The tcp port for a forward: its provisional port, its reserved port on reconnect, a fresh
    /// one, or the fixed one asked for.
    fn claim_tcp_port(
        &mut self,
        key: &KeyFingerprint,
        requested: u32,
        provisional: Option<u16>,
        reconnect: ReconnectKey,
    ) -> Result<(Address, Option<ReconnectKey>), ForwardError> {
        if requested == 0 {
            let port = match provisional {
                Some(p) => p,
                None => match self.ownership.reserved_for(&reconnect).cloned() {
                    Some(Address::Port(p)) => p,
                    _ => self.ports.allocate_tcp_port()?,
                },
            };
            self.end_reservation(&Address::Port(port), key);
            return Ok((Address::Port(port), Some(reconnect)));
        }
        let port = u16::try_from(requested).expect("port_ok checked the range");
        let address = Address::Port(port);
        match self.ownership.check(&address, key) {
            // An early listener already holds it for this forward.
            Claim::Free if provisional == Some(port) => {}
            Claim::Free => {
                if !self.ports.take(port) {
                    return Err(ForwardError::PortInUse(port));
                }
            }
            Claim::Reclaimed { .. } => self.end_reservation(&address, key),
            Claim::TakeOver { .. } => {}
            Claim::Taken => return Err(ForwardError::PortInUse(port)),
            Claim::Reserved => return Err(ForwardError::PortReserved(port)),
        }
        Ok((address, None))
    }

    /// The name for an http or tls forward.
    fn claim_name(
        &mut self,
        key: &KeyFingerprint,
        bind_address: &str,
        kind: EndpointKind,
        reconnect: ReconnectKey,
    ) -> Result<(Address, Option<ReconnectKey>), ForwardError> {
        let Some(name) = requested_name(bind_address, self.config.domain())? else {
            if kind == EndpointKind::Tls {
                return Err(ForwardError::TlsNeedsName);
            }
            if let Some(address) = self.ownership.reserved_for(&reconnect).cloned() {
                self.end_reservation(&address, key);
                return Ok((address, Some(reconnect)));
            }
            return Ok((self.fresh_random_name()?, Some(reconnect)));
        };
        let address = Address::Name(name.clone());
        match self.ownership.check(&address, key) {
            Claim::Free | Claim::TakeOver { .. } => {}
            Claim::Reclaimed { .. } => self.end_reservation(&address, key),
            Claim::Taken => return Err(ForwardError::NameTaken(name.to_string())),
            Claim::Reserved => return Err(ForwardError::NameReserved(name.to_string())),
        }
        Ok((address, None))
    }

    fn fresh_random_name(&mut self) -> Result<Address, ForwardError> {
        // Collisions are astronomically rare with a real RNG; the bound only stops a broken one.
        for _ in 0..64 {
            let address = Address::Name(random_name(self.rng.as_mut(), self.config.domain()));
            if !self.ownership.is_held(&address) {
                return Ok(address);
            }
        }
        Err(ForwardError::NoFreeName)
    }

    /// Ends `key`'s reservation of `address`, if that is what holds it, and its timer.
    fn end_reservation(&mut self, address: &Address, key: &KeyFingerprint) {
        if let Claim::Reclaimed { until } = self.ownership.check(address, key) {
            self.timers
                .cancel(until, Timer::Reservation(address.clone()));
            self.ownership.forget(address);
        }
    }

    /// The same key asked for an address it holds on another connection: the old endpoint goes,
    /// its session is told, and a connection left with nothing to forward is closed.
    fn take_over(&mut self, now: Instant, old_conn: ConnId, old: EndpointId, address: &Address) {
        self.remove_endpoint(now, old, Removal::TakenOver);
        let shown = match address {
            Address::Name(n) => n.to_string(),
            Address::Port(p) => format!("tcp port {p}"),
        };
        self.print(
            old_conn,
            OutputStream::Stderr,
            format!("{shown} was taken over by a new connection with the same key"),
        );
        let empty = self
            .conns
            .get(&old_conn)
            .is_some_and(|c| c.endpoints.is_empty() && c.pending.is_empty());
        if empty {
            self.actions.push_back(Action::Close { conn: old_conn, message: CLOSED_BY_SERVER.to_owned() });
            self.handle(now, crate::Input::ConnectionClosed { conn: old_conn });
        }
    }

    /// Routes an endpoint, prints its Forwarding line and sends a held reply.
    fn go_live(&mut self, endpoint: EndpointId) {
        let e = self
            .endpoints
            .get_mut(&endpoint)
            .expect("caller just created or bound it");
        e.state = EndpointState::Live;
        let route = Arc::clone(&e.route);
        let held = e.held_reply.take();
        let requested = e.requested_port;
        let line = e.forwarding_line(&self.config);
        self.routes.insert(route.address.clone(), endpoint);
        self.actions
            .push_back(Action::RouteAdded(Arc::clone(&route)));
        if let Some(request) = held {
            let port = (requested == 0).then_some(route.target.port);
            self.reply(route.conn, request, Reply::Granted { port });
        }
        self.print(route.conn, OutputStream::Stdout, line);
    }

    pub(crate) fn bound(&mut self, endpoint: EndpointId) {
        if self.early_bind_result(endpoint, true) {
            return;
        }
        let Some(e) = self.endpoints.get(&endpoint) else {
            return;
        };
        if !matches!(e.state, EndpointState::Binding { .. }) {
            return;
        }
        if let Address::Port(port) = e.route.address {
            self.ports.mark_bound(port);
        }
        self.go_live(endpoint);
    }

    /// The host would not bind the port: a port-0 forward moves to another port, a fixed one
    /// fails.
    pub(crate) fn bind_failed(&mut self, now: Instant, endpoint: EndpointId) {
        if self.early_bind_result(endpoint, false) {
            return;
        }
        let Some(e) = self.endpoints.get(&endpoint) else {
            return;
        };
        let (EndpointState::Binding { attempts }, Address::Port(port)) =
            (&e.state, &e.route.address)
        else {
            return;
        };
        let (attempts, port, conn) = (*attempts, *port, e.route.conn);
        self.ports.mark_host_busy(port);
        let retry = e.requested_port == 0 && attempts < self.config.limits().bind_attempts();
        let next = if retry {
            self.ports.allocate_tcp_port().ok()
        } else {
            None
        };
        let Some(next) = next else {
            let e = self.endpoints.get_mut(&endpoint).expect("looked up above");
            e.state = EndpointState::BindFailed;
            let held = e.held_reply;
            self.remove_endpoint(now, endpoint, Removal::Released);
            if let Some(request) = held {
                self.reply(conn, request, Reply::Refused);
            }
            return self.fail(now, conn, ForwardError::BindFailed(port).into());
        };
        let e = self.endpoints.get_mut(&endpoint).expect("looked up above");
        let mut route = (*e.route).clone();
        let old = std::mem::replace(&mut route.address, Address::Port(next));
        if e.held_reply.is_some() {
            route.target.port = u32::from(next);
        }
        e.route = Arc::new(route);
        e.state = EndpointState::Binding {
            attempts: attempts + 1,
        };
        let key = self.conns[&conn].key.clone().expect("endpoints need auth");
        let reconnect = ReconnectKey {
            owner: key.clone(),
            bind_address: self.endpoints[&endpoint].route.target.bind_address.clone(),
            port: 0,
            kind: EndpointKind::Tcp,
        };
        self.ownership.forget(&old);
        self.ports.release(port);
        self.ownership
            .hold(Address::Port(next), key, conn, endpoint, Some(reconnect));
        self.actions.push_back(Action::Bind {
            endpoint,
            port: next,
        });
    }

    pub(crate) fn forward_cancelled(
        &mut self,
        conn: ConnId,
        request: RequestId,
        bind_address: &str,
        port: u32,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return self.reply(conn, request, Reply::Refused);
        };
        // OpenSSH cancels a port-0 forward by the port it was given (RFC 4254 §7.1).
        let found = c.endpoints.iter().copied().find(|id| {
            self.endpoints.get(id).is_some_and(|e| {
                e.route.target.bind_address == bind_address
                    && (e.requested_port == port || e.route.target.port == port)
            })
        });
        if let Some(endpoint) = found {
            c.endpoints.remove(&endpoint);
            if let Some(held) = self
                .endpoints
                .get_mut(&endpoint)
                .and_then(|e| e.held_reply.take())
            {
                self.reply(conn, held, Reply::Refused);
            }
            self.remove_endpoint_now(endpoint, Removal::Released);
            return self.reply(conn, request, Reply::Granted { port: None });
        }
        let pending = c.pending.iter().position(|f| {
            f.bind_address == bind_address
                && (f.port == port
                    || matches!(f.reply, PendingReply::Sent { channel_port, .. } if channel_port == port))
        });
        match pending {
            Some(i) => {
                let forward = c.pending.remove(i);
                self.refuse_held(conn, vec![forward]);
                self.reply(conn, request, Reply::Granted { port: None });
            }
            None => self.reply(conn, request, Reply::Refused),
        }
    }

    /// Removes an endpoint: route and listener go, the address is reserved, released or already
    /// passed on, per `why`.
    pub(crate) fn remove_endpoint(&mut self, now: Instant, endpoint: EndpointId, why: Removal) {
        let Some(e) = self.endpoints.get(&endpoint) else {
            return;
        };
        let conn = e.route.conn;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.endpoints.remove(&endpoint);
        }
        if why == Removal::ConnectionEnded && !self.config.name_grace().is_zero() {
            let until = now + self.config.name_grace();
            let address = e.route.address.clone();
            self.remove_endpoint_now(endpoint, Removal::ConnectionEnded);
            self.ownership.reserve(&address, until);
            self.timers.set(until, Timer::Reservation(address));
        } else {
            let why = match why {
                Removal::ConnectionEnded => Removal::Released,
                other => other,
            };
            self.remove_endpoint_now(endpoint, why);
        }
    }

    /// The part of removal that needs no clock. `ConnectionEnded` here leaves the ownership entry
    /// for the caller to turn into a reservation.
    fn remove_endpoint_now(&mut self, endpoint: EndpointId, why: Removal) {
        let Some(e) = self.endpoints.remove(&endpoint) else {
            return;
        };
        let address = e.route.address.clone();
        if e.state == EndpointState::Live {
            self.routes.remove(&address);
            self.actions.push_back(Action::RouteRemoved(endpoint));
        }
        if let Address::Port(port) = address {
            // A port the host refused has no listener to stop.
            if e.state != EndpointState::BindFailed {
                self.actions.push_back(Action::Unbind { endpoint, port });
            }
        }
        if why == Removal::Released {
            self.ownership.forget(&address);
            if let Address::Port(port) = address {
                self.ports.release(port);
            }
        }
    }
}
