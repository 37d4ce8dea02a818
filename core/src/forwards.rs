//! Every forward of every connection: their lifecycle (see [`crate::forward`]), the public
//! addresses they claim, the tcp ports they hold and the live routes. The gateway hands in the
//! connection's key and command; what a step does to sessions (Forwarding lines, takeovers) comes
//! back in [`Effects`] for the gateway to carry out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rand_core::RngCore;

use crate::action::{Action, Reply};
use crate::claims::reconnect_key;
use crate::command::{Command, EndpointKind};
use crate::config::GatewayConfig;
use crate::endpoints::{forwarding_line, ChannelTarget, EndpointPolicy, Route};
use crate::error::ForwardError;
use crate::forward::{
    Asked, Binding, Forward, ForwardState, Live, Reserving, ReservingNext, Waiting,
};
use crate::ids::{ConnId, EndpointId, KeyFingerprint, RequestId};
use crate::names::requested_name;
use crate::ownership::{Address, Claim, Holding, Ownership};
use crate::ports::{default_kind, TcpPortPool};
use crate::saved::{RestoreSkipped, SavedAddress, SavedHolding, SavedReconnect, SavedState};
use crate::timers::{Timer, TimerTable};

/// What one step of the forwards may touch outside them, and what it leaves for the gateway.
pub(crate) struct Effects<'a> {
    pub(crate) now: Instant,
    pub(crate) config: &'a GatewayConfig,
    pub(crate) rng: &'a mut (dyn RngCore + Send),
    pub(crate) actions: &'a mut VecDeque<Action>,
    pub(crate) timers: &'a mut TimerTable,
    /// Forwarding lines, in order, for the gateway to print (or queue until the session opens).
    pub(crate) lines: Vec<(ConnId, String)>,
    /// Addresses the same key took from another of its connections: that session is told.
    pub(crate) taken_over: Vec<(ConnId, Address)>,
}

impl Effects<'_> {
    fn reply(&mut self, conn: ConnId, request: RequestId, reply: Reply) {
        self.actions.push_back(Action::Reply {
            conn,
            request,
            reply,
        });
    }
}

/// Why a forward goes away, which decides what happens to its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Its connection ended: the address stays reserved for the key for the grace period.
    ConnectionEnded,
    /// The client cancelled it, or it failed: the address is free again.
    Released,
    /// The same key took the address on another connection: the new holder has it already.
    TakenOver,
}

/// What the command said, as the forwards need it: `None` while the command is not known.
pub(crate) type Settled<'a> = Option<Option<&'a Command>>;

#[derive(Debug)]
pub(crate) struct Forwards {
    forwards: BTreeMap<EndpointId, Forward>,
    by_conn: BTreeMap<ConnId, BTreeSet<EndpointId>>,
    routes: BTreeMap<Address, EndpointId>,
    pub(crate) ownership: Ownership,
    pub(crate) ports: TcpPortPool,
    next_id: u64,
}

impl Forwards {
    pub(crate) fn new(ports: TcpPortPool) -> Self {
        Self {
            forwards: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            routes: BTreeMap::new(),
            ownership: Ownership::default(),
            ports,
            next_id: 0,
        }
    }

    // ---- queries ------------------------------------------------------------------------------

    pub(crate) fn route_at(&self, address: &Address) -> Option<&Arc<Route>> {
        let id = self.routes.get(address)?;
        self.forwards.get(id)?.route()
    }

    pub(crate) fn count(&self) -> usize {
        self.forwards.len()
    }

    pub(crate) fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Forwards a connection holds, in any state.
    pub(crate) fn count_of(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, BTreeSet::len)
    }

    /// Whether the connection already asked for this fixed bind address and port (port 0 asks
    /// for a fresh port each time: `-R 0:localhost:22 -R 0:localhost:80` are two forwards).
    pub(crate) fn is_duplicate(&self, conn: ConnId, asked: &Asked) -> bool {
        asked.port != 0 && self.of(conn).any(|f| f.asked == *asked)
    }

    pub(crate) fn route_of(&self, id: EndpointId) -> Option<&Arc<Route>> {
        self.forwards.get(&id)?.route()
    }

    pub(crate) fn conn_of(&self, id: EndpointId) -> Option<ConnId> {
        self.forwards.get(&id).map(|f| f.conn)
    }

    /// Every live route, in endpoint id order, with the port its client asked for.
    pub(crate) fn live(&self) -> impl Iterator<Item = (u32, &Arc<Route>)> {
        self.forwards
            .values()
            .filter_map(|f| f.route().map(|r| (f.asked.port, r)))
    }

    /// A connection's live routes, with the port its client asked for.
    pub(crate) fn live_of(&self, conn: ConnId) -> impl Iterator<Item = (u32, &Arc<Route>)> {
        self.of(conn)
            .filter_map(|f| f.route().map(|r| (f.asked.port, r)))
    }

    fn of(&self, conn: ConnId) -> impl Iterator<Item = &Forward> {
        self.by_conn
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|id| self.forwards.get(id))
    }

    fn ids_of(&self, conn: ConnId) -> Vec<EndpointId> {
        self.by_conn
            .get(&conn)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    // ---- requests -----------------------------------------------------------------------------

    /// A forward before the command is known: answered now, or once its listener is bound if it
    /// may become tcp, so that the port a reply names is one the host really gave us.
    pub(crate) fn request_early(
        &mut self,
        fx: &mut Effects<'_>,
        conn: ConnId,
        key: &KeyFingerprint,
        request: RequestId,
        asked: Asked,
    ) {
        let id = self.new_id();
        let mut refused = None;
        let listener = if asked.port == 0 {
            let reconnect = reconnect_key(key, &asked.bind_address, 0, EndpointKind::Tcp);
            match self.ownership.reserved_for(&reconnect).cloned() {
                Some(address @ Address::Port(port)) => {
                    // Ours now: its reservation must not expire under the listener.
                    self.end_reservation(fx, &address, key);
                    Some(port)
                }
                // At its quota the key gets no provisional port: the command may not want one,
                // and if it does, the quota refuses it there with its reason.
                _ if self.ownership.held_by(key).tcp_ports
                    >= fx.config.quota_for(key).tcp_ports =>
                {
                    None
                }
                _ => self.ports.allocate_tcp_port().ok(),
            }
        } else if self.ports.in_range(asked.port) {
            let port = u16::try_from(asked.port).expect("in_range checked it fits");
            let own = self.of(conn).any(|f| f.listener_port() == Some(port));
            match self.ownership.check(&Address::Port(port), key) {
                Claim::Free if own => {
                    refused = Some(ForwardError::Duplicate(
                        asked.bind_address.as_str().into(),
                        asked.port,
                    ));
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
                // The key's own port (reserved, or live elsewhere) is claimed with the command.
                Claim::Reclaimed { .. } | Claim::TakeOver { .. } => None,
            }
        } else {
            // Always http or tls: a name held by another key is known to fail already.
            if let Ok(Some(name)) = requested_name(&asked.bind_address, fx.config.domain()) {
                refused = match self.ownership.check(&Address::Name(name.clone()), key) {
                    Claim::Taken => Some(ForwardError::NameTaken(name.to_string())),
                    Claim::Reserved => Some(ForwardError::NameReserved(name.to_string())),
                    _ => self.not_nested(fx, &name, key).err(),
                };
            }
            None
        };
        let state = match listener {
            Some(port) => {
                fx.actions.push_back(Action::Bind { endpoint: id, port });
                ForwardState::Reserving(Reserving {
                    request,
                    port,
                    attempts: 1,
                })
            }
            None => {
                // With the range exhausted only http can succeed: the client knows it by that port.
                let channel_port = match asked.port {
                    0 => u32::from(fx.config.http_port()),
                    port => port,
                };
                let port = (asked.port == 0).then_some(channel_port);
                fx.reply(conn, request, Reply::Granted { port });
                ForwardState::Waiting(Waiting {
                    channel_port,
                    listener: None,
                    attempts: 0,
                    refused,
                })
            }
        };
        self.insert(id, conn, asked, state);
    }

    /// A forward after the command is known: it becomes an endpoint at once (a tcp one once its
    /// listener is bound), and its reply says so; refused, it says why.
    pub(crate) fn request_settled(
        &mut self,
        fx: &mut Effects<'_>,
        conn: ConnId,
        key: &KeyFingerprint,
        request: RequestId,
        asked: Asked,
        command: Option<&Command>,
    ) -> Result<(), ForwardError> {
        let id = self.new_id();
        let waiting = Waiting {
            channel_port: asked.port,
            listener: None,
            attempts: 0,
            refused: None,
        };
        self.insert(id, conn, asked, ForwardState::Waiting(waiting));
        self.resolve(fx, id, key, command, Some(request))
    }

    /// The command is known: every forward waiting for it becomes an endpoint, in the order they
    /// were asked for. The first that cannot stops the rest (the session ends with its error).
    /// A forward still reserving its listener resolves when the bind is answered.
    pub(crate) fn settle(
        &mut self,
        fx: &mut Effects<'_>,
        conn: ConnId,
        key: &KeyFingerprint,
        command: Option<&Command>,
    ) -> Result<(), ForwardError> {
        for id in self.ids_of(conn) {
            self.resolve(fx, id, key, command, None)?;
        }
        Ok(())
    }

    /// Refuses every request of `conn` still owed a reply: the session is about to end.
    pub(crate) fn refuse_owed(&mut self, fx: &mut Effects<'_>, conn: ConnId) {
        let owed: Vec<RequestId> = self.of(conn).filter_map(owed_reply).collect();
        for request in owed {
            fx.reply(conn, request, Reply::Refused);
        }
    }

    /// `cancel-tcpip-forward`: OpenSSH names a port-0 forward by the port it was given (RFC 4254
    /// §7.1).
    pub(crate) fn cancel(
        &mut self,
        fx: &mut Effects<'_>,
        conn: ConnId,
        request: RequestId,
        bind_address: &str,
        port: u32,
    ) {
        let found = self
            .of(conn)
            .find(|f| f.is_named_by(bind_address, port))
            .map(|f| f.id);
        let Some(id) = found else {
            return fx.reply(conn, request, Reply::Refused);
        };
        if let Some(owed) = self.forwards.get(&id).and_then(owed_reply) {
            fx.reply(conn, owed, Reply::Refused);
        }
        self.remove(fx, id, Removal::Released);
        fx.reply(conn, request, Reply::Granted { port: None });
    }

    // ---- listeners ----------------------------------------------------------------------------

    /// The adapter bound a listener. `settled` is the connection's command, if known.
    pub(crate) fn bound(
        &mut self,
        fx: &mut Effects<'_>,
        id: EndpointId,
        key: &KeyFingerprint,
        settled: Settled<'_>,
    ) -> Result<(), ForwardError> {
        let Some((conn, asked_port, state)) = self.take_state(id) else {
            return Ok(());
        };
        match state {
            ForwardState::Reserving(reserving) => {
                self.ports.mark_bound(reserving.port);
                let (request, waiting) = reserving.bound();
                let port = (asked_port == 0).then_some(waiting.channel_port);
                fx.reply(conn, request, Reply::Granted { port });
                self.set_state(id, ForwardState::Waiting(waiting));
                match settled {
                    Some(command) => self.resolve(fx, id, key, command, None),
                    None => Ok(()),
                }
            }
            ForwardState::Binding(binding) => {
                self.ports.mark_bound(binding.port());
                let (reply, live) = binding.bound();
                self.go_live(fx, id, live, reply);
                Ok(())
            }
            // A stale answer: the forward moved on.
            other => {
                self.set_state(id, other);
                Ok(())
            }
        }
    }

    /// The host would not bind a listener: a port-0 forward moves to another port, a fixed one
    /// fails. `settled` is the connection's command, if known.
    pub(crate) fn bind_failed(
        &mut self,
        fx: &mut Effects<'_>,
        id: EndpointId,
        key: &KeyFingerprint,
        settled: Settled<'_>,
    ) -> Result<(), ForwardError> {
        let Some((conn, asked_port, state)) = self.take_state(id) else {
            return Ok(());
        };
        let attempts_left =
            |attempts| asked_port == 0 && attempts < fx.config.limits().bind_attempts();
        match state {
            ForwardState::Reserving(reserving) => {
                self.ports.mark_host_busy(reserving.port);
                self.ports.release(reserving.port);
                let next = if attempts_left(reserving.attempts) {
                    self.ports.allocate_tcp_port().ok()
                } else {
                    None
                };
                match reserving.failed(next) {
                    ReservingNext::Retry(reserving) => {
                        let port = reserving.port;
                        self.set_state(id, ForwardState::Reserving(reserving));
                        fx.actions.push_back(Action::Bind { endpoint: id, port });
                        Ok(())
                    }
                    ReservingNext::Answered(request, waiting) => {
                        let port = (asked_port == 0).then_some(waiting.channel_port);
                        fx.reply(conn, request, Reply::Granted { port });
                        self.set_state(id, ForwardState::Waiting(waiting));
                        match settled {
                            Some(command) => self.resolve(fx, id, key, command, None),
                            None => Ok(()),
                        }
                    }
                }
            }
            ForwardState::Binding(binding) => {
                let failed = binding.port();
                self.ports.mark_host_busy(failed);
                let next = if attempts_left(binding.attempts) {
                    self.ports.allocate_tcp_port().ok()
                } else {
                    None
                };
                let old = Address::Port(failed);
                self.ownership.forget(&old);
                self.ports.release(failed);
                match binding.failed(next) {
                    Ok(binding) => {
                        let port = binding.port();
                        let reconnect = reconnect_key(
                            key,
                            &binding.route.target.bind_address,
                            0,
                            EndpointKind::Tcp,
                        );
                        self.ownership.hold(
                            Address::Port(port),
                            key.clone(),
                            conn,
                            id,
                            Some(reconnect),
                        );
                        self.set_state(id, ForwardState::Binding(binding));
                        fx.actions.push_back(Action::Bind { endpoint: id, port });
                        Ok(())
                    }
                    Err((reply, port)) => {
                        self.forget(id);
                        if let Some(request) = reply {
                            fx.reply(conn, request, Reply::Refused);
                        }
                        Err(ForwardError::BindFailed(port))
                    }
                }
            }
            other => {
                self.set_state(id, other);
                Ok(())
            }
        }
    }

    // ---- across a restart ---------------------------------------------------------------------

    /// Every address held, as kept across a restart, reservations with what is left of them at
    /// `now`.
    pub(crate) fn saved(&self, now: Instant) -> Vec<SavedHolding> {
        self.ownership
            .holders()
            .map(|(address, h)| SavedHolding {
                address: match address {
                    Address::Name(name) => SavedAddress::Name(name.as_str().to_owned()),
                    Address::Port(port) => SavedAddress::Port(*port),
                },
                owner: h.owner.clone(),
                state: match h.holding {
                    Holding::Live { .. } => SavedState::Live,
                    Holding::Reserved { until } => SavedState::Reserved {
                        remaining: until.saturating_duration_since(now),
                    },
                },
                reconnect: h.reconnect.as_ref().map(|r| SavedReconnect {
                    bind_address: r.bind_address.clone(),
                    port: r.port,
                    kind: r.kind,
                }),
            })
            .collect()
    }

    /// Reserves one saved address for its key again: a live one for the whole grace from `now`,
    /// a reserved one for what was left of it (never longer than the grace).
    pub(crate) fn restore(
        &mut self,
        fx: &mut Effects<'_>,
        saved: SavedHolding,
    ) -> Result<(), RestoreSkipped> {
        let grace = fx.config.name_grace();
        let left = match saved.state {
            SavedState::Live => grace,
            SavedState::Reserved { remaining } => remaining.min(grace),
        };
        if left.is_zero() {
            return Err(RestoreSkipped::Ended);
        }
        let address = match saved.address {
            // Re-read as a user would ask for it: the domain may have changed since.
            SavedAddress::Name(text) => match requested_name(&text, fx.config.domain()) {
                Ok(Some(name)) if name.as_str() == text => Address::Name(name),
                _ => return Err(RestoreSkipped::NotOurs),
            },
            SavedAddress::Port(port) if !self.ports.in_range(u32::from(port)) => {
                return Err(RestoreSkipped::OutOfRange)
            }
            SavedAddress::Port(port) => Address::Port(port),
        };
        if self.ownership.is_held(&address) {
            return Err(RestoreSkipped::Held);
        }
        if let Address::Port(port) = address {
            if !self.ports.take(port) {
                return Err(RestoreSkipped::Held);
            }
        }
        let reconnect = saved
            .reconnect
            .map(|r| reconnect_key(&saved.owner, &r.bind_address, r.port, r.kind));
        let until = fx.now + left;
        fx.timers.set(Timer::Reservation(address.clone()), until);
        self.ownership
            .restore(address, saved.owner, until, reconnect);
        Ok(())
    }

    // ---- endings ------------------------------------------------------------------------------

    /// The connection ended: its routes go at once; its names and ports stay reserved for its
    /// key for the grace period.
    pub(crate) fn connection_ended(&mut self, fx: &mut Effects<'_>, conn: ConnId) {
        for id in self.ids_of(conn) {
            self.remove(fx, id, Removal::ConnectionEnded);
        }
        self.by_conn.remove(&conn);
    }

    /// A reservation's time is up.
    pub(crate) fn reservation_expired(&mut self, now: Instant, address: &Address) {
        if self.ownership.expire(address, now) {
            if let Address::Port(port) = address {
                self.ports.release(*port);
            }
        }
    }

    /// A reservation whose key is no longer allowed to log in: freed at once (its timer is the
    /// caller's to cancel); a live holder is left alone.
    pub(crate) fn reservation_revoked(&mut self, address: &Address) {
        if self.ownership.is_reserved(address) {
            self.ownership.forget(address);
            if let Address::Port(port) = address {
                self.ports.release(*port);
            }
        }
    }

    /// Removes a forward: its route and listener go; its address is reserved, released or
    /// already passed on, per `why`. A reply it still owes is the caller's to send.
    fn remove(&mut self, fx: &mut Effects<'_>, id: EndpointId, why: Removal) {
        let Some(f) = self.forget(id) else {
            return;
        };
        if let Some(port) = f.listener_port() {
            fx.actions.push_back(Action::Unbind { endpoint: id, port });
        }
        let address = match f.state {
            ForwardState::Reserving(r) => return self.ports.release(r.port),
            ForwardState::Waiting(w) => {
                if let Some(port) = w.listener {
                    self.ports.release(port);
                }
                return;
            }
            ForwardState::Binding(b) => b.route.address,
            ForwardState::Live(l) => {
                self.routes.remove(&l.route.address);
                fx.actions.push_back(Action::RouteRemoved(id));
                l.route.address.clone()
            }
        };
        let grace = fx.config.name_grace();
        match why {
            Removal::ConnectionEnded if !grace.is_zero() => {
                let until = fx.now + grace;
                self.ownership.reserve(&address, until);
                fx.timers.set(Timer::Reservation(address), until);
            }
            Removal::ConnectionEnded | Removal::Released => {
                self.ownership.forget(&address);
                if let Address::Port(port) = address {
                    self.ports.release(port);
                }
            }
            Removal::TakenOver => {}
        }
    }

    // ---- becoming an endpoint -----------------------------------------------------------------

    /// Turns a waiting forward into an endpoint under `command`, or removes it and says why.
    /// `reply` is the request still owed an answer (a forward that came after the command).
    fn resolve(
        &mut self,
        fx: &mut Effects<'_>,
        id: EndpointId,
        key: &KeyFingerprint,
        command: Option<&Command>,
        reply: Option<RequestId>,
    ) -> Result<(), ForwardError> {
        let Some((conn, _, state)) = self.take_state(id) else {
            return Ok(());
        };
        let waiting = match state {
            ForwardState::Waiting(waiting) => waiting,
            other => {
                self.set_state(id, other);
                return Ok(());
            }
        };
        let asked = self.forwards[&id].asked.clone();
        let policy = match command {
            Some(command) => {
                EndpointPolicy::from_command(command).expect("help never settles forwards")
            }
            None => EndpointPolicy::default_for(default_kind(asked.port)),
        };
        let claimed = self.claim(fx, conn, key, &asked, &waiting, policy.kind());
        let (address, reconnect) = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                self.set_state(id, ForwardState::Waiting(waiting));
                self.remove(fx, id, Removal::Released);
                if let Some(request) = reply {
                    fx.reply(conn, request, Reply::Refused);
                }
                return Err(e);
            }
        };
        if let Claim::TakeOver {
            conn: old_conn,
            endpoint: old,
        } = self.ownership.check(&address, key)
        {
            self.remove(fx, old, Removal::TakenOver);
            fx.taken_over.push((old_conn, address.clone()));
        }
        self.ownership
            .hold(address.clone(), key.clone(), conn, id, reconnect);
        // A listener that is not this endpoint's goes; the endpoint's own is kept, bound.
        let kept = match (waiting.listener, &address) {
            (Some(port), Address::Port(p)) if port == *p => true,
            (Some(port), _) => {
                fx.actions.push_back(Action::Unbind { endpoint: id, port });
                self.ports.release(port);
                false
            }
            (None, _) => false,
        };
        // The client knows the forward by the port its reply names.
        let channel_port = match (reply, asked.port, &address) {
            (Some(_), 0, Address::Port(p)) => u32::from(*p),
            (Some(_), 0, _) if policy.kind() == EndpointKind::Tls => {
                u32::from(fx.config.https_port())
            }
            (Some(_), 0, _) => u32::from(fx.config.http_port()),
            _ => waiting.channel_port,
        };
        let route = Route {
            endpoint: id,
            conn,
            address: address.clone(),
            target: ChannelTarget {
                bind_address: asked.bind_address,
                port: channel_port,
            },
            policy,
            visitor_limit: fx.config.limits().visitors_per_endpoint(),
            visitor_share: fx.config.limits().visitors_per_source(),
        };
        match address {
            Address::Port(port) if !kept => {
                fx.actions.push_back(Action::Bind { endpoint: id, port });
                let attempts = waiting.attempts.max(1);
                self.set_state(
                    id,
                    ForwardState::Binding(Binding {
                        route,
                        reply,
                        attempts,
                    }),
                );
            }
            _ => {
                let live = Live {
                    route: Arc::new(route),
                };
                self.go_live(fx, id, live, reply);
            }
        }
        Ok(())
    }

    /// Routes an endpoint, answers a reply it still owes, and queues its Forwarding line.
    fn go_live(
        &mut self,
        fx: &mut Effects<'_>,
        id: EndpointId,
        live: Live,
        reply: Option<RequestId>,
    ) {
        let route = Arc::clone(&live.route);
        let Some(f) = self.forwards.get_mut(&id) else {
            return;
        };
        let asked_port = f.asked.port;
        f.state = ForwardState::Live(live);
        self.routes.insert(route.address.clone(), id);
        fx.actions.push_back(Action::RouteAdded(Arc::clone(&route)));
        if let Some(request) = reply {
            let port = (asked_port == 0).then_some(route.target.port);
            fx.reply(route.conn, request, Reply::Granted { port });
        }
        fx.lines
            .push((route.conn, forwarding_line(&route, asked_port, fx.config)));
    }

    // ---- bookkeeping --------------------------------------------------------------------------

    fn new_id(&mut self) -> EndpointId {
        self.next_id += 1;
        EndpointId::from_raw(self.next_id)
    }

    fn insert(&mut self, id: EndpointId, conn: ConnId, asked: Asked, state: ForwardState) {
        self.by_conn.entry(conn).or_default().insert(id);
        self.forwards.insert(
            id,
            Forward {
                id,
                conn,
                asked,
                state,
            },
        );
    }

    /// Takes a forward's state out to move it on; [`Forwards::set_state`] puts the next one in.
    /// Meanwhile the forward reads as a plain waiting one with nothing held.
    fn take_state(&mut self, id: EndpointId) -> Option<(ConnId, u32, ForwardState)> {
        let f = self.forwards.get_mut(&id)?;
        let idle = ForwardState::Waiting(Waiting {
            channel_port: f.asked.port,
            listener: None,
            attempts: 0,
            refused: None,
        });
        Some((f.conn, f.asked.port, std::mem::replace(&mut f.state, idle)))
    }

    fn set_state(&mut self, id: EndpointId, state: ForwardState) {
        if let Some(f) = self.forwards.get_mut(&id) {
            f.state = state;
        }
    }

    /// Drops a forward from the tables, returning it.
    fn forget(&mut self, id: EndpointId) -> Option<Forward> {
        let f = self.forwards.remove(&id)?;
        if let Some(ids) = self.by_conn.get_mut(&f.conn) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_conn.remove(&f.conn);
            }
        }
        Some(f)
    }
}

/// The request a forward still owes an answer, if any.
fn owed_reply(f: &Forward) -> Option<RequestId> {
    match &f.state {
        ForwardState::Reserving(r) => Some(r.request),
        ForwardState::Binding(b) => b.reply,
        ForwardState::Waiting(_) | ForwardState::Live(_) => None,
    }
}
