//! Visitor admission. Which endpoint a visitor reaches and whether it may enter are the core's
//! answers ([`Gateway::route_for`], [`Route::admit_request`], [`Route::admit_connection`]); the
//! one thing counted here is how many visitors each endpoint serves at once: a semaphore per live
//! route, sized by [`Route::visitor_limit`]. http endpoints count each request in flight (on the
//! http and the https listener alike), tcp and tls endpoints each connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use russh::server::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tunnel_core::{EndpointId, Entrance, Gateway, Route, VisitorRefusal};

use crate::driver::{ConnectionGone, Driver, State};
use crate::net::Net;

/// One semaphore per live route.
#[derive(Default)]
pub(crate) struct VisitorLimits(HashMap<EndpointId, Arc<Semaphore>>);

impl VisitorLimits {
    pub(crate) fn route_added(&mut self, route: &Route) {
        let permits = Arc::new(Semaphore::new(route.visitor_limit()));
        self.0.insert(route.endpoint, permits);
    }

    /// Visitors already in keep their permits; the semaphore goes with the last of them.
    pub(crate) fn route_removed(&mut self, endpoint: EndpointId) {
        self.0.remove(&endpoint);
    }
}

/// A visitor's endpoint, found but not yet counted against its limit.
pub struct Visit {
    /// The route the core chose.
    pub route: Arc<Route>,
    handle: Handle,
    gone: ConnectionGone,
    permits: Arc<Semaphore>,
}

/// A visitor let in: what it needs to reach its endpoint, and the permit that counts it against
/// the endpoint's visitor limit for as long as it is held.
pub struct Admitted {
    /// The route.
    pub route: Arc<Route>,
    /// The SSH connection to open the visitor's channel on.
    pub handle: Handle,
    /// Held while the visitor is served.
    pub permit: OwnedSemaphorePermit,
    /// Resolves when the SSH connection ends.
    pub gone: ConnectionGone,
}

impl Visit {
    /// Lets a tcp or tls visitor from `peer` in, by the core's rules and the endpoint's limit.
    pub fn admit_connection(self, peer: IpAddr) -> Result<Admitted, VisitorRefusal> {
        self.route.admit_connection(peer)?;
        self.count()
    }

    /// Lets an HTTP request in, by the core's rules and the endpoint's limit.
    pub fn admit_request(
        self,
        peer: IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<Admitted, VisitorRefusal> {
        self.route.admit_request(peer, authorization)?;
        self.count()
    }

    /// One more visitor in, unless the endpoint serves as many as it may.
    fn count(self) -> Result<Admitted, VisitorRefusal> {
        let permit = self
            .permits
            .try_acquire_owned()
            .map_err(|_| VisitorRefusal::Busy)?;
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
        let permits = self
            .visitor_limits
            .0
            .get(&route.endpoint)
            .ok_or(VisitorRefusal::TunnelClosed)?;
        Ok(Visit {
            route: Arc::clone(route),
            handle,
            gone: ConnectionGone(link.alive.clone()),
            permits: Arc::clone(permits),
        })
    }
}
