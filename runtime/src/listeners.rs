//! Tcp endpoint listeners: bound before the forward's reply, accepting once the route is live,
//! and closed for good before their port is bound again.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tunnel_core::{EndpointId, Input};

use crate::driver::Driver;
use crate::net::Net;

pub(crate) enum ListenerSlot<L> {
    /// Bound, not accepting yet: until its route is live, visitors wait in the kernel's backlog
    /// (their connect succeeds) for the command to say what the endpoint is.
    Bound(L),
    /// Accepting visitors; `closed` completes once the task, and so the listener, is dropped.
    Running {
        task: AbortHandle,
        closed: oneshot::Receiver<()>,
    },
}

impl<N: Net> Driver<N> {
    /// Binds a tcp endpoint's listener; the result is the core's next input.
    pub(crate) async fn bind(&self, endpoint: EndpointId, port: u16) -> Input {
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
