//! Visitor admission: the semaphore that holds each live endpoint to its visitor limit, and the
//! lookups that hand a visitor everything it needs to reach its endpoint.

use std::sync::Arc;

use russh::server::Handle;
use tokio::sync::OwnedSemaphorePermit;
use tunnel_core::Route;

use crate::driver::{ConnectionGone, Driver, State};
use crate::net::Net;

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

impl<N: Net> Driver<N> {
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
}

impl<L> State<L> {
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
