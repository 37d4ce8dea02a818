//! One `tcpip-forward`, from request to removal, as one value with one typed state.
//!
//! Stock OpenSSH sends every `tcpip-forward` right after authentication, then opens the session
//! and sends the command without waiting for the replies (RFC 4254 §7.1, §6.5), so the command
//! that says what a forward is for arrives after it. Each forward is answered at once: one that
//! may become tcp first gets a listener, so that the port its reply names is one the host really
//! gave us. The states, and the only ways between them:
//!
//! ```text
//!  request ──► Reserving ──bound──► Waiting ──command──► Binding ──bound──► Live
//!     │           │  ▲                 ▲        │            │  ▲
//!     │           └──┘ failed: next    │        │            └──┘ failed: next port
//!     │              port, or give up ─┘        └──command──► Live (http, tls, or a tcp
//!     └──after the command──► Binding or Live                 endpoint whose listener is bound)
//! ```
//!
//! Each state is a type; a transition consumes it and returns the next, so a step that cannot
//! happen in a state (a route for a forward still waiting, a reply owed twice) does not compile.

use std::sync::Arc;

use crate::endpoints::Route;
use crate::error::ForwardError;
use crate::ids::{ConnId, EndpointId, RequestId};
use crate::ownership::Address;

/// The forward as the client asked for it (RFC 4254 §7.1): the client knows it by these two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Asked {
    /// "address to bind": carries the NAME.
    pub(crate) bind_address: String,
    /// "port number to bind"; 0 asks the server to pick.
    pub(crate) port: u32,
}

/// One forward.
#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) id: EndpointId,
    pub(crate) conn: ConnId,
    pub(crate) asked: Asked,
    pub(crate) state: ForwardState,
}

#[derive(Debug)]
pub(crate) enum ForwardState {
    Reserving(Reserving),
    Waiting(Waiting),
    Binding(Binding),
    Live(Live),
}

/// Before the command: the listener of a forward that may be tcp is being bound, and its reply
/// waits for the outcome.
#[derive(Debug)]
pub(crate) struct Reserving {
    pub(crate) request: RequestId,
    pub(crate) port: u16,
    pub(crate) attempts: usize,
}

/// Answered before the command; waits for it.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// The port the client knows the forward by: the one its reply named for port 0.
    pub(crate) channel_port: u32,
    /// A bound listener held until the command says whether the forward is tcp. Visitors that
    /// connect meanwhile wait in its backlog rather than being refused.
    pub(crate) listener: Option<u16>,
    pub(crate) attempts: usize,
    /// An error the command cannot undo (a fixed port held by another key, a bind the host
    /// refused), told with the command: the reply was a grant, so that the user sees why.
    pub(crate) refused: Option<ForwardError>,
}

/// A tcp endpoint whose listener is being bound.
#[derive(Debug)]
pub(crate) struct Binding {
    pub(crate) route: Route,
    /// The request to answer once bound: a forward that came after the command.
    pub(crate) reply: Option<RequestId>,
    pub(crate) attempts: usize,
}

/// Routed.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) route: Arc<Route>,
}

/// What a bind answer did to a forward that was reserving its listener.
#[derive(Debug)]
pub(crate) enum ReservingNext {
    /// Try this port next.
    Retry(Reserving),
    /// Done: answer the request, then wait for the command.
    Answered(RequestId, Waiting),
}

impl Reserving {
    /// The listener is bound: the forward is granted on its port.
    pub(crate) fn bound(self) -> (RequestId, Waiting) {
        let waiting = Waiting {
            channel_port: u32::from(self.port),
            listener: Some(self.port),
            attempts: self.attempts,
            refused: None,
        };
        (self.request, waiting)
    }

    /// The host refused the port: try `next`, or give up. Giving up is still a grant; the
    /// session ends with the reason once the user can read it.
    pub(crate) fn failed(self, next: Option<u16>) -> ReservingNext {
        match next {
            Some(port) => ReservingNext::Retry(Reserving {
                port,
                attempts: self.attempts + 1,
                ..self
            }),
            None => ReservingNext::Answered(
                self.request,
                Waiting {
                    channel_port: u32::from(self.port),
                    listener: None,
                    attempts: self.attempts,
                    refused: Some(ForwardError::BindFailed(self.port)),
                },
            ),
        }
    }
}

impl Binding {
    /// The listener is bound: the endpoint goes live; a reply still owed goes with it.
    pub(crate) fn bound(self) -> (Option<RequestId>, Live) {
        let live = Live {
            route: Arc::new(self.route),
        };
        (self.reply, live)
    }

    /// The host refused the port: move to `next` (the caller has claimed it), or fail.
    pub(crate) fn failed(mut self, next: Option<u16>) -> Result<Binding, (Option<RequestId>, u16)> {
        let Address::Port(port) = self.route.address else {
            unreachable!("only tcp endpoints bind listeners");
        };
        match next {
            Some(next) => {
                self.route.address = Address::Port(next);
                // A reply still owed names the port the endpoint finally gets.
                if self.reply.is_some() {
                    self.route.target.port = u32::from(next);
                }
                self.attempts += 1;
                Ok(self)
            }
            None => Err((self.reply, port)),
        }
    }

    /// The tcp port being bound.
    pub(crate) fn port(&self) -> u16 {
        match self.route.address {
            Address::Port(port) => port,
            Address::Name(_) => unreachable!("only tcp endpoints bind listeners"),
        }
    }
}

impl Forward {
    /// The port the client knows this forward by (RFC 4254 §7.1: the allocated one for port 0),
    /// which a `cancel-tcpip-forward` may name.
    pub(crate) fn channel_port(&self) -> Option<u32> {
        match &self.state {
            ForwardState::Reserving(r) => Some(u32::from(r.port)),
            ForwardState::Waiting(w) => Some(w.channel_port),
            ForwardState::Binding(b) => Some(b.route.target.port),
            ForwardState::Live(l) => Some(l.route.target.port),
        }
    }

    /// Whether the client's `bind_address:port` names this forward.
    pub(crate) fn is_named_by(&self, bind_address: &str, port: u32) -> bool {
        self.asked.bind_address == bind_address
            && (self.asked.port == port || self.channel_port() == Some(port))
    }

    /// The live route, if routed.
    pub(crate) fn route(&self) -> Option<&Arc<Route>> {
        match &self.state {
            ForwardState::Live(l) => Some(&l.route),
            _ => None,
        }
    }

    /// The tcp port whose listener is bound or being bound, if any.
    pub(crate) fn listener_port(&self) -> Option<u16> {
        match &self.state {
            ForwardState::Reserving(r) => Some(r.port),
            ForwardState::Waiting(w) => w.listener,
            ForwardState::Binding(b) => Some(b.port()),
            ForwardState::Live(l) => match l.route.address {
                Address::Port(port) => Some(port),
                Address::Name(_) => None,
            },
        }
    }
}
