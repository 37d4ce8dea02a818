//! Visitor admission. Which endpoint a visitor reaches and whether it may enter are the core's
//! answers ([`Gateway::route_for`], [`Route::admit_request`], [`Route::admit_connection`]); what
//! is counted here is how many visitors are served at once, against the core's figures: per live
//! route ([`Route::visitor_limit`]), per source at that route ([`Route::visitor_share`], so one
//! visitor cannot hold a route's whole limit), and on the whole server. http endpoints count each
//! channel to the user's local service for as long as it lives (on the http and the https
//! listener alike: a request in flight, its body streaming, an upgraded stream, the channel a
//! connection keeps between requests; see `http.rs`), tcp and tls endpoints each connection.
//! Before any of that, every connection to the http and https listeners counts against its
//! source ([`Limits::admits_visitor_connection`]) for as long as it is open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use russh::server::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tunnel_core::{visitor_source, EndpointId, Entrance, Gateway, Limits, Route, VisitorRefusal};

use crate::driver::{ConnectionGone, Driver, State};
use crate::metrics::EndpointStats;
use crate::net::Net;

/// The counts of one live route.
#[derive(Debug)]
pub(crate) struct RouteCount {
    permits: Arc<Semaphore>,
    share: usize,
    /// Visitors in, per source.
    by_source: Mutex<HashMap<IpAddr, usize>>,
    /// The endpoint's numbers, which count each visitor in and out.
    stats: Arc<EndpointStats>,
}

/// One count per live route.
#[derive(Default)]
pub(crate) struct VisitorLimits(HashMap<EndpointId, Arc<RouteCount>>);

impl VisitorLimits {
    pub(crate) fn route_added(&mut self, route: &Route, stats: Arc<EndpointStats>) {
        let count = RouteCount {
            permits: Arc::new(Semaphore::new(route.visitor_limit())),
            share: route.visitor_share(),
            by_source: Mutex::new(HashMap::new()),
            stats,
        };
        self.0.insert(route.endpoint, Arc::new(count));
    }

    /// Visitors already in keep their permits; the semaphore goes with the last of them.
    pub(crate) fn route_removed(&mut self, endpoint: EndpointId) {
        self.0.remove(&endpoint);
    }
}

/// Open connections to the http and https listeners, per source.
#[derive(Debug)]
pub(crate) struct SourceConnections {
    /// Replaced when the operator reconfigures: connections over a lowered limit stay open.
    limits: Mutex<Limits>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Every visitor the server serves at once, against a limit the operator may change: a raised
/// limit lets more in at once, a lowered one lets nobody in until enough have left.
#[derive(Debug)]
pub(crate) struct ServerVisitors {
    count: ServerCount,
    limit: usize,
}

/// The server's count of visitors in, shared by every visit.
#[derive(Clone, Debug)]
pub(crate) struct ServerCount {
    permits: Arc<Semaphore>,
    /// Permits a lowered limit still has to take back: each is kept by the next visitor to leave.
    owed: Arc<AtomicUsize>,
}

/// One visitor counted on the server.
#[derive(Debug)]
struct ServerSlot {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicUsize>,
}

impl ServerVisitors {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            count: ServerCount {
                permits: Arc::new(Semaphore::new(limit)),
                owed: Arc::new(AtomicUsize::new(0)),
            },
            limit,
        }
    }

    pub(crate) fn count(&self) -> ServerCount {
        self.count.clone()
    }

    pub(crate) fn set_limit(&mut self, limit: usize) {
        let permits = &self.count.permits;
        let owed = &self.count.owed;
        let mut more = limit.saturating_sub(self.limit);
        let mut fewer = self.limit.saturating_sub(limit);
        // Permits still owed from an earlier lowering are cancelled by a raise first.
        let cancelled = owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o - o.min(more))
            })
            .map_or(0, |o| o.min(more));
        more -= cancelled;
        permits.add_permits(more);
        // The permits free now go at once; those held by visitors as they leave.
        fewer -= permits.forget_permits(fewer);
        owed.fetch_add(fewer, Ordering::AcqRel);
        self.limit = limit;
    }
}

impl ServerCount {
    fn enter(&self) -> Option<ServerSlot> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        Some(ServerSlot {
            permit: Some(permit),
            owed: Arc::clone(&self.owed),
        })
    }
}

impl Drop for ServerSlot {
    fn drop(&mut self) {
        let repaid = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1))
            .is_ok();
        if let (true, Some(permit)) = (repaid, self.permit.take()) {
            permit.forget();
        }
    }
}

/// Counts one connection against its source for as long as it is held.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    source: IpAddr,
    counts: Arc<SourceConnections>,
}

impl SourceConnections {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits: Mutex::new(limits),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The limits from now on (a reconfiguration).
    pub(crate) fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// A slot for a connection just accepted from `peer`, unless its source holds as many as
    /// the core lets it; then the caller closes the connection.
    pub(crate) fn enter(self: &Arc<Self>, peer: IpAddr) -> Option<SourceSlot> {
        let source = visitor_source(peer);
        let limits = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.get(&source).copied().unwrap_or(0);
        if !limits.admits_visitor_connection(n) {
            return None;
        }
        open.insert(source, n + 1);
        Some(SourceSlot {
            source,
            counts: Arc::clone(self),
        })
    }

    #[cfg(test)]
    fn open_from(&self, source: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&source).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// A visitor's endpoint, found but not yet counted against its limit.
pub struct Visit {
    /// The route the core chose.
    pub route: Arc<Route>,
    handle: Handle,
    gone: ConnectionGone,
    count: Arc<RouteCount>,
    server: ServerCount,
}

/// Counts one visitor in for as long as it is held: at its route, for its source there, and on
/// the server.
#[derive(Debug)]
pub struct VisitorPermit {
    _route: OwnedSemaphorePermit,
    _server: ServerSlot,
    source: IpAddr,
    count: Arc<RouteCount>,
}

impl VisitorPermit {
    /// The numbers of the endpoint this visitor was let in to.
    pub fn stats(&self) -> &Arc<EndpointStats> {
        &self.count.stats
    }
}

impl Drop for VisitorPermit {
    fn drop(&mut self) {
        self.count.stats.visitor_out();
        let mut by_source = self
            .count
            .by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// A visitor let in: what it needs to reach its endpoint, and the permit that counts it against
/// the endpoint's visitor limit for as long as it is held.
pub struct Admitted {
    /// The route.
    pub route: Arc<Route>,
    /// The SSH connection to open the visitor's channel on.
    pub handle: Handle,
    /// Held while the visitor is served.
    pub permit: VisitorPermit,
    /// Resolves when the SSH connection ends.
    pub gone: ConnectionGone,
}

impl<N: Net> Driver<N> {
    /// Counts a connection to the http or https listeners against its source for as long as the
    /// returned count lives, or `None` when the source holds as many as it may. A trusted load
    /// balancer (without a PROXY header naming the visitor) carries many visitors: it is not one
    /// source, and is not counted.
    pub(crate) fn enter_visitor_connection(&self, peer: IpAddr) -> Option<Option<SourceSlot>> {
        if !self.settings().trusted_proxies.is_one_source(peer) {
            return Some(None);
        }
        self.visitor_connections.enter(peer).map(Some)
    }

    /// In the accept loop, so that connections are counted in the order they arrive: counted
    /// now, unless a PROXY header must first say whose connection it is. `None`: the source
    /// holds as many as it may, and this one is closed.
    pub(crate) fn count_on_accept(&self, peer: IpAddr) -> Option<SourceCount> {
        if self.settings().trusted_proxies.sends_proxy_header(peer) {
            return Some(SourceCount::AfterHeader);
        }
        self.enter_visitor_connection(peer)
            .map(SourceCount::Counted)
    }

    /// Once the visitor is known: the count taken at accept, or one for the visitor the PROXY
    /// header named (`None` when that source is full).
    pub(crate) fn count_visitor(
        &self,
        early: SourceCount,
        visitor: IpAddr,
    ) -> Option<Option<SourceSlot>> {
        match early {
            SourceCount::Counted(slot) => Some(slot),
            SourceCount::AfterHeader => self.enter_visitor_connection(visitor),
        }
    }
}

/// A connection to the http or https listeners against its source's budget.
pub(crate) enum SourceCount {
    /// Counted at accept (no slot for a trusted load balancer, which is not one source).
    Counted(Option<SourceSlot>),
    /// From a trusted proxy that sends a PROXY header: counted for the visitor it names.
    AfterHeader,
}

impl Visit {
    /// Lets a tcp or tls visitor from `peer` in, by the core's rules and the endpoint's limit.
    pub fn admit_connection(self, peer: IpAddr) -> Result<Admitted, VisitorRefusal> {
        self.route.admit_connection(peer)?;
        self.count(peer)
    }

    /// Lets an HTTP request in, by the core's rules and the endpoint's limit.
    pub fn admit_request(
        self,
        peer: IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<Admitted, VisitorRefusal> {
        self.route.admit_request(peer, authorization)?;
        self.count(peer)
    }

    /// One more visitor in, unless the endpoint, this visitor's source there or the server
    /// serves as many as it may.
    fn count(self, peer: IpAddr) -> Result<Admitted, VisitorRefusal> {
        let source = visitor_source(peer);
        let route = Arc::clone(&self.count.permits)
            .try_acquire_owned()
            .map_err(|_| VisitorRefusal::Busy)?;
        let server = self.server.enter().ok_or(VisitorRefusal::Busy)?;
        {
            let mut by_source = self
                .count
                .by_source
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = by_source.entry(source).or_insert(0);
            if *n >= self.count.share {
                return Err(VisitorRefusal::Busy);
            }
            *n += 1;
        }
        self.count.stats.visitor_in();
        let permit = VisitorPermit {
            _route: route,
            _server: server,
            source,
            count: Arc::clone(&self.count),
        };
        Ok(Admitted {
            route: self.route,
            handle: self.handle,
            permit,
            gone: self.gone,
        })
    }
}

impl<N: Net> Driver<N> {
    /// The endpoint an HTTP request for `host` (its Host header or absolute target) reaches.
    /// Requests are routed by Host on both listeners, so a request inside a terminated https
    /// connection is routed like one on the http listener: to http endpoints only.
    pub fn visit_by_host(&self, host: &str) -> Result<Visit, VisitorRefusal> {
        self.visit(|gateway| gateway.route_for(Entrance::Http, host))
    }

    /// The endpoint an https connection with the SNI `name` reaches.
    pub fn visit_by_sni(&self, name: &str) -> Result<Visit, VisitorRefusal> {
        self.visit(|gateway| gateway.route_for(Entrance::Https, name))
    }

    /// The endpoint a visitor on tcp port `port` reaches.
    pub fn visit_by_port(&self, port: u16) -> Result<Visit, VisitorRefusal> {
        self.visit(|gateway| gateway.route_for_port(port))
    }

    fn visit(
        &self,
        route_for: impl FnOnce(&Gateway) -> Result<&Arc<Route>, VisitorRefusal>,
    ) -> Result<Visit, VisitorRefusal> {
        let state = self.lock();
        let route = route_for(&state.gateway)?;
        state.visit(route)
    }
}

impl<L> State<L> {
    /// Everything a visitor of `route` needs, gathered under the one lock the lookup took.
    fn visit(&self, route: &Arc<Route>) -> Result<Visit, VisitorRefusal> {
        // A live route whose connection has no handle yet (its session task is starting) or no
        // permits: the tunnel cannot carry a visitor, as if it had just closed.
        let link = self
            .conns
            .get(&route.conn)
            .ok_or(VisitorRefusal::TunnelClosed)?;
        let handle = link.handle.clone().ok_or(VisitorRefusal::TunnelClosed)?;
        let count = self
            .visitor_limits
            .0
            .get(&route.endpoint)
            .ok_or(VisitorRefusal::TunnelClosed)?;
        Ok(Visit {
            route: Arc::clone(route),
            handle,
            gone: ConnectionGone(link.alive.clone()),
            count: Arc::clone(count),
            server: self.visitors_on_server.count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_holds_its_own_connections_until_they_close() {
        let counts =
            SourceConnections::new(Limits::default().with_visitor_connections_per_source(2));
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.1".parse().expect("ip");
        let first = counts.enter(a).expect("the first from a");
        let _second = counts.enter(a).expect("the second from a");
        assert!(counts.enter(a).is_none(), "a third from a is refused");
        let _other = counts.enter(b).expect("b has a count of its own");
        drop(first);
        assert_eq!(counts.open_from(a), 1);
        let _again = counts
            .enter(a)
            .expect("a closed connection gives its slot back");
        assert!(counts.enter(a).is_none());
    }

    #[test]
    fn a_changed_server_limit_counts_the_visitors_already_in() {
        let mut server = ServerVisitors::new(2);
        let first = server.count().enter().expect("one in");
        server.set_limit(3);
        let second = server.count().enter().expect("raised: two more fit");
        let third = server.count().enter().expect("raised: two more fit");
        assert!(server.count().enter().is_none(), "3 is the limit");
        // Lowered below the visitors in: nobody new until they are under it.
        server.set_limit(1);
        drop(first);
        assert!(server.count().enter().is_none(), "two in, limit 1");
        drop(second);
        assert!(server.count().enter().is_none(), "one in, limit 1");
        drop(third);
        let again = server.count().enter().expect("none in, limit 1");
        assert!(server.count().enter().is_none());
        // A raise cancels what a lowering still owed.
        server.set_limit(0);
        server.set_limit(2);
        let another = server.count().enter().expect("one in, limit 2");
        assert!(server.count().enter().is_none(), "two in, limit 2");
        drop((again, another));
        assert_eq!(server.count.permits.available_permits(), 2);
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_an_empty_source_is_forgotten() {
        let counts =
            SourceConnections::new(Limits::default().with_visitor_connections_per_source(1));
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let slot = counts.enter(one).expect("the first of the /64");
        assert!(counts.enter(same_64).is_none(), "the /64 is one source");
        drop(slot);
        assert!(counts.open.lock().expect("not poisoned").is_empty());
        assert!(counts.enter(same_64).is_some());
    }
}
