//! Tcp endpoint listeners: bound before the forward's reply, accepting once the route is live,
//! and closed for good before their port is bound again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tunnel_core::{Address, EndpointId, Input, Route};

use crate::driver::Driver;
use crate::net::Net;

/// How long a bind waits for the port's previous listener to close. Its accept task is aborted
/// already, so this resolves at once; the bound only keeps a bug from hanging the bind.
const PREVIOUS_LISTENER_CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Every tcp endpoint listener, by endpoint, and the ports still being let go.
pub(crate) struct Listeners<L> {
    slots: HashMap<EndpointId, ListenerSlot<L>>,
    /// Ports whose listener was unbound but may not be closed yet: an abort is asynchronous, and
    /// the next bind of the port (a takeover, a reconnect) must wait for it.
    closing: HashMap<u16, oneshot::Receiver<()>>,
    /// The server is stopping: no listener starts accepting.
    stopped: bool,
}

enum ListenerSlot<L> {
    /// The bind is under way.
    Binding,
    /// Bound, not accepting yet: until its route is live, visitors wait in the kernel's backlog
    /// (their connect succeeds) for the command to say what the endpoint is.
    Bound(L),
    /// Accepting visitors; `closed` completes once the task, and so the listener, is dropped.
    Running {
        task: AbortHandle,
        closed: oneshot::Receiver<()>,
    },
}

impl<L> Default for Listeners<L> {
    fn default() -> Self {
        Self {
            slots: HashMap::new(),
            closing: HashMap::new(),
            stopped: false,
        }
    }
}

impl<L> Listeners<L> {
    /// Carries out an `Unbind`: a listener not accepting yet closes here, a running one once its
    /// task is gone, and one still binding as soon as its bind completes.
    pub(crate) fn unbind(&mut self, endpoint: EndpointId, port: u16) {
        if let Some(ListenerSlot::Running { task, closed }) = self.slots.remove(&endpoint) {
            task.abort();
            self.closing.insert(port, closed);
        }
    }
}

impl<L> Listeners<L> {
    /// The server is stopping: no listener accepts another visitor; those in carry on, and each
    /// port is let go with its endpoint as usual.
    pub(crate) fn stop_accepting(&mut self) {
        for slot in self.slots.values() {
            if let ListenerSlot::Running { task, .. } = slot {
                task.abort();
            }
        }
        self.stopped = true;
    }
}

impl<N: Net> Driver<N> {
    /// Carries out a `Bind`; the result is the core's next input.
    pub(crate) async fn bind(&self, endpoint: EndpointId, port: u16) -> Input {
        let closing = {
            let mut state = self.lock();
            state
                .listeners
                .slots
                .insert(endpoint, ListenerSlot::Binding);
            state.listeners.closing.remove(&port)
        };
        if let Some(closed) = closing {
            let _ = tokio::time::timeout(PREVIOUS_LISTENER_CLOSE_BOUND, closed).await;
        }
        let addr = SocketAddr::new(self.settings().tcp_bind_ip, port);
        match self.net.bind(addr).await {
            Ok(listener) => {
                let mut state = self.lock();
                match state.listeners.slots.get_mut(&endpoint) {
                    Some(slot @ ListenerSlot::Binding) => *slot = ListenerSlot::Bound(listener),
                    // Unbound while binding (its connection ended): the core ignores this
                    // answer, and the listener closes here.
                    _ => drop(listener),
                }
                Input::Bound { endpoint }
            }
            Err(error) => {
                tracing::warn!(%addr, %error, "tcp endpoint bind failed");
                self.lock().listeners.slots.remove(&endpoint);
                Input::BindFailed { endpoint }
            }
        }
    }

    /// A tcp route went live: its bound listener starts accepting.
    pub(crate) fn start_accepting(
        self: &Arc<Self>,
        listeners: &mut Listeners<N::Listener>,
        route: &Route,
    ) {
        let Address::Port(port) = route.address else {
            return;
        };
        if listeners.stopped {
            return;
        }
        match listeners.slots.remove(&route.endpoint) {
            Some(ListenerSlot::Bound(listener)) => {
                let (closed_tx, closed) = oneshot::channel();
                let task = tokio::spawn(crate::tcp::serve_listener(
                    Arc::clone(self),
                    listener,
                    port,
                    closed_tx,
                ))
                .abort_handle();
                let running = ListenerSlot::Running { task, closed };
                listeners.slots.insert(route.endpoint, running);
            }
            Some(other) => {
                listeners.slots.insert(route.endpoint, other);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::Ipv4Addr;

    use rand_core::SeedableRng as _;
    use tokio::sync::Notify;
    use tunnel_core::{Gateway, GatewayConfig};

    use super::*;
    use crate::driver::DriverSettings;

    /// The real network, with binds held until the test lets them finish.
    #[derive(Clone)]
    struct HeldBinds(Arc<Notify>);

    impl Net for HeldBinds {
        type Stream = tokio::net::TcpStream;
        type Listener = tokio::net::TcpListener;

        async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
            self.0.notified().await;
            tokio::net::TcpListener::bind(addr).await
        }
    }

    #[tokio::test]
    async fn a_listener_unbound_while_binding_is_closed_when_the_bind_completes() {
        let gate = Arc::new(Notify::new());
        let gateway = Gateway::new(
            GatewayConfig::new("localhost", 80, 443),
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(1)),
        );
        let settings = DriverSettings {
            tcp_bind_ip: Ipv4Addr::LOCALHOST.into(),
            http_header_timeout: Duration::from_secs(1),
            http_idle_timeout: Duration::from_secs(1),
            tls_hello_timeout: Duration::from_secs(1),
            channel_open_timeout: Duration::from_secs(1),
            close_grace: Duration::from_secs(1),
            spill_dir: std::env::temp_dir(),
            trusted_proxies: tunnel_core::TrustedProxies::default(),
            access_log: false,
            metrics_per_endpoint: false,
        };
        let driver = Driver::new(gateway, HeldBinds(Arc::clone(&gate)), settings);
        let endpoint = EndpointId::from_raw(7);
        let binding = tokio::spawn({
            let driver = Arc::clone(&driver);
            async move { driver.bind(endpoint, 0).await }
        });
        while !driver.lock().listeners.slots.contains_key(&endpoint) {
            tokio::task::yield_now().await;
        }
        driver.lock().listeners.unbind(endpoint, 0);
        gate.notify_one();
        let answer = binding.await.expect("the bind task does not panic");
        assert_eq!(answer, Input::Bound { endpoint });
        assert!(
            driver.lock().listeners.slots.is_empty(),
            "the listener must not outlive its Unbind"
        );
    }
}
