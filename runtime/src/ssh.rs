//! The SSH front door: russh's server handler. Each callback becomes one core input and gets the
//! core's answer; no decision is taken here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use russh::server::{Auth, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tunnel_core::{ConnId, Input, KeyFingerprint, Reply, RequestId};

use crate::accept::{accept, AcceptBackoff};
use crate::driver::Driver;
use crate::keys::{certificate_facts, fingerprint};
use crate::killable::{KillSwitch, Killable};
use crate::net::{Accepted, ByteStream, Net};
use crate::proxy_accept::proxied;
use crate::read_buffer::ReadBuffered;
use crate::session_writer::{outbox, run_session_writer, Outgoing};

/// Accepts SSH connections until the listener fails for good.
pub async fn serve<N: Net>(
    driver: Arc<Driver<N>>,
    listener: N::Listener,
    config: Arc<russh::server::Config>,
) {
    // Per server, not per process: simulations run many servers and replay by seed.
    let mut next_conn = 0u64;
    let mut backoff = AcceptBackoff::new("ssh");
    loop {
        let accepted = accept(&listener, &mut backoff).await;
        next_conn += 1;
        let conn = ConnId::from_raw(next_conn);
        let driver = Arc::clone(&driver);
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            // From a trusted load balancer, its PROXY header first: the visitor it names is the
            // peer the core judges (per-IP cap, MaxStartups, `from=`).
            let Some(Accepted { stream, peer, .. }) =
                proxied(accepted, &driver.settings(), "ssh").await
            else {
                return;
            };
            run_connection(driver, config, stream, peer, conn).await;
        });
    }
}

async fn run_connection<N: Net, S: ByteStream>(
    driver: Arc<Driver<N>>,
    config: Arc<russh::server::Config>,
    stream: S,
    peer: SocketAddr,
    conn: ConnId,
) {
    let (outbox, outbox_reader) = outbox();
    driver.register(conn, outbox);
    if driver
        .submit(Input::ConnectionOpened { conn, peer })
        .await
        .closed(conn)
    {
        driver.submit(Input::ConnectionClosed { conn }).await;
        return;
    }
    let authenticated = Arc::new(AtomicBool::new(false));
    let handler = SshHandler {
        conn,
        driver: Arc::clone(&driver),
        next_request: 0,
        session: None,
        pty: false,
        authenticated: Arc::clone(&authenticated),
    };
    // The whole phase before authentication (banner, key exchange, auth) is bounded here: the
    // core's own deadline can only close a connection whose handshake is done.
    let auth_timeout = driver.with_gateway(|g| g.config().auth_timeout());
    let deadline = tokio::time::Instant::now() + auth_timeout;
    let kill = KillSwitch::default();
    let started = tokio::time::timeout_at(
        deadline,
        russh::server::run_stream(
            config,
            ReadBuffered::new(Killable::new(stream, kill.clone())),
            handler,
        ),
    )
    .await;
    match started {
        Ok(Ok(mut session)) => {
            let handle = session.handle();
            driver.set_handle(conn, handle.clone());
            let grace = driver.settings().close_grace;
            tokio::spawn(run_session_writer(handle, outbox_reader, grace));
            let too_slow = async {
                tokio::time::sleep_until(deadline).await;
                if authenticated.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            let ended = tokio::select! {
                ended = &mut session => Some(ended),
                () = too_slow => None,
            };
            match ended {
                Some(Err(error)) => {
                    tracing::debug!(%conn, %peer, %error, "ssh connection ended with an error");
                }
                Some(Ok(())) => {}
                None => {
                    tracing::debug!(%conn, %peer, "not authenticated in time; closed");
                    // A client stalled in the key exchange never reads a disconnect: cut its
                    // stream, which ends russh's task for it and closes the socket.
                    kill.kill();
                    let _ = session.await;
                }
            }
        }
        Ok(Err(error)) => tracing::debug!(%conn, %peer, %error, "ssh handshake failed"),
        Err(_) => tracing::debug!(%conn, %peer, "no SSH banner in time; closed"),
    }
    // Only now, with the socket gone, does the connection give back its unauthenticated slot.
    driver.submit(Input::ConnectionClosed { conn }).await;
}

struct SshHandler<N: Net> {
    conn: ConnId,
    driver: Arc<Driver<N>>,
    next_request: u64,
    /// The session channel, kept so its messages keep flowing.
    session: Option<Channel<Msg>>,
    pty: bool,
    /// Set once the core accepted a key: the pre-auth deadline no longer applies.
    authenticated: Arc<AtomicBool>,
}

impl<N: Net> SshHandler<N> {
    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId::from_raw(self.next_request)
    }

    fn is_session(&self, channel: ChannelId) -> bool {
        self.session.as_ref().is_some_and(|c| c.id() == channel)
    }
}

impl<N: Net> Handler for SshHandler<N> {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let key = KeyFingerprint::new(fingerprint(offer.public_key));
        Ok(if self.driver.with_gateway(|g| g.accepts_key(&key)) {
            Auth::Accept
        } else {
            self.driver.metrics.auth_failed("unlisted_key");
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let input = Input::AuthRequested {
            conn: self.conn,
            user: user.to_owned(),
            key: KeyFingerprint::new(fingerprint(key.public_key)),
        };
        Ok(if self.driver.submit(input).await.auth(self.conn) {
            self.authenticated.store(true, Ordering::Relaxed);
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        // russh has verified the signature, the validity window and the client's proof of the
        // certificate's key; the core decides the rest.
        let input = Input::CertificateAuthRequested {
            conn: self.conn,
            user: user.to_owned(),
            certificate: certificate_facts(certificate),
        };
        Ok(if self.driver.submit(input).await.auth(self.conn) {
            self.authenticated.store(true, Ordering::Relaxed);
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let answers = self
            .driver
            .submit(Input::SessionRequested { conn: self.conn })
            .await;
        if answers.session(self.conn) {
            reply.accept().await;
            self.session = Some(channel);
        } else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.is_session(channel) {
            self.pty = true;
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_session(channel, session)?;
        let command = String::from_utf8_lossy(data).into_owned();
        self.driver
            .submit(Input::ExecRequested {
                conn: self.conn,
                command,
            })
            .await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_session(channel, session)?;
        self.driver
            .submit(Input::ShellRequested { conn: self.conn })
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let request = self.request_id();
        let answers = self
            .driver
            .submit(Input::ForwardRequested {
                conn: self.conn,
                request,
                bind_address: address.to_owned(),
                port: *port,
            })
            .await;
        Ok(match answers.reply(self.conn, request) {
            Reply::Granted { port: allocated } => {
                if let Some(allocated) = allocated {
                    *port = allocated;
                }
                true
            }
            Reply::Refused => false,
        })
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let request = self.request_id();
        let answers = self
            .driver
            .submit(Input::ForwardCancelled {
                conn: self.conn,
                request,
                bind_address: address.to_owned(),
                port,
            })
            .await;
        Ok(matches!(
            answers.reply(self.conn, request),
            Reply::Granted { .. }
        ))
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.is_session(channel) {
            self.driver
                .submit(Input::SessionData {
                    conn: self.conn,
                    data: data.to_vec(),
                    terminal: self.pty,
                })
                .await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.is_session(channel) {
            self.session = None;
            self.driver
                .submit(Input::SessionClosed { conn: self.conn })
                .await;
        }
        Ok(())
    }
}

impl<N: Net> SshHandler<N> {
    /// Acknowledges an exec or shell request and points the outbox at the channel. Only the
    /// connection's one session channel can carry a command.
    fn start_session(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if !self.is_session(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        session.channel_success(channel)?;
        self.driver.send_outgoing(
            self.conn,
            Outgoing::Session {
                channel,
                pty: self.pty,
            },
        );
        Ok(())
    }
}
