//! What address a forward gets as an endpoint: a tcp port or a name, claimed in the ownership
//! table under the rules that keep one key's addresses its own (taken, reserved, nested names,
//! quotas) and the reconnect key that gives them back after a drop.

use crate::command::EndpointKind;
use crate::error::ForwardError;
use crate::forward::{Asked, Waiting};
use crate::forwards::{Effects, Forwards};
use crate::ids::{ConnId, KeyFingerprint};
use crate::names::{random_name, requested_name, Hostname};
use crate::ownership::{Address, Claim, Nested, ReconnectKey};
use crate::timers::Timer;

impl Forwards {
    /// The address a waiting forward gets as an endpoint of `kind`, with the reconnect key that
    /// gives it back after a drop; or why it gets none.
    pub(crate) fn claim(
        &mut self,
        fx: &mut Effects<'_>,
        conn: ConnId,
        key: &KeyFingerprint,
        asked: &Asked,
        waiting: &Waiting,
        kind: EndpointKind,
    ) -> Result<(Address, Option<ReconnectKey>), ForwardError> {
        if !self.ports.allows(kind, asked.port) {
            return Err(ForwardError::PortNotAllowed {
                kind,
                port: asked.port,
                tcp_range: self.ports.bounds(),
            });
        }
        // The client was told yes, with this reason to say no later; the port coming free since
        // cannot change that.
        if let Some(e) = &waiting.refused {
            return Err(e.clone());
        }
        let reconnect = reconnect_key(key, &asked.bind_address, asked.port, kind);
        let claimed = match kind {
            EndpointKind::Tcp => {
                self.claim_tcp_port(fx, key, asked.port, waiting.listener, reconnect)?
            }
            EndpointKind::Http | EndpointKind::Tls => {
                self.claim_name(fx, key, &asked.bind_address, kind, reconnect)?
            }
        };
        // The same address spelled twice on one connection (`app` and `app.localhost`, or 80 and
        // 443): taking it over from itself would end the connection under us.
        if matches!(self.ownership.check(&claimed.0, key), Claim::TakeOver { conn: holder, .. } if holder == conn)
        {
            return Err(ForwardError::Duplicate(
                asked.bind_address.as_str().into(),
                asked.port,
            ));
        }
        Ok(claimed)
    }

    /// The tcp port for a forward: its own listener's port, its reserved port on reconnect, a
    /// fresh one, or the fixed one asked for.
    fn claim_tcp_port(
        &mut self,
        fx: &mut Effects<'_>,
        key: &KeyFingerprint,
        asked: u32,
        listener: Option<u16>,
        reconnect: ReconnectKey,
    ) -> Result<(Address, Option<ReconnectKey>), ForwardError> {
        let quota = fx.config.quota_for(key).tcp_ports;
        let over_quota = self.ownership.held_by(key).tcp_ports >= quota;
        if asked == 0 {
            let port = match listener {
                // The provisional port is not the key's yet: keeping it would pass the quota.
                Some(_) if over_quota => return Err(ForwardError::TcpPortQuota(quota)),
                Some(port) => port,
                None => match self.ownership.reserved_for(&reconnect).cloned() {
                    Some(Address::Port(port)) => port,
                    _ if over_quota => return Err(ForwardError::TcpPortQuota(quota)),
                    _ => self.ports.allocate_tcp_port()?,
                },
            };
            self.end_reservation(fx, &Address::Port(port), key);
            return Ok((Address::Port(port), Some(reconnect)));
        }
        let port = u16::try_from(asked).expect("the port rule checked the range");
        let address = Address::Port(port);
        match self.ownership.check(&address, key) {
            Claim::Free if over_quota => return Err(ForwardError::TcpPortQuota(quota)),
            // Its listener already holds it.
            Claim::Free if listener == Some(port) => {}
            Claim::Free => {
                if !self.ports.take(port) {
                    return Err(ForwardError::PortInUse(port));
                }
            }
            Claim::Reclaimed { .. } => self.end_reservation(fx, &address, key),
            Claim::TakeOver { .. } => {}
            Claim::Taken => return Err(ForwardError::PortInUse(port)),
            Claim::Reserved => return Err(ForwardError::PortReserved(port)),
        }
        Ok((address, None))
    }

    /// The name for an http or tls forward.
    fn claim_name(
        &mut self,
        fx: &mut Effects<'_>,
        key: &KeyFingerprint,
        bind_address: &str,
        kind: EndpointKind,
        reconnect: ReconnectKey,
    ) -> Result<(Address, Option<ReconnectKey>), ForwardError> {
        let Some(name) = requested_name(bind_address, fx.config.domain())? else {
            if kind == EndpointKind::Tls {
                return Err(ForwardError::TlsNeedsName);
            }
            if let Some(address) = self.ownership.reserved_for(&reconnect).cloned() {
                self.end_reservation(fx, &address, key);
                return Ok((address, Some(reconnect)));
            }
            self.within_name_quota(fx, key)?;
            return Ok((self.fresh_random_name(fx, key)?, Some(reconnect)));
        };
        self.not_nested(fx, &name, key)?;
        let address = Address::Name(name.clone());
        match self.ownership.check(&address, key) {
            Claim::Free => self.within_name_quota(fx, key)?,
            Claim::TakeOver { .. } => {}
            Claim::Reclaimed { .. } => self.end_reservation(fx, &address, key),
            Claim::Taken => return Err(ForwardError::NameTaken(name.to_string())),
            Claim::Reserved => return Err(ForwardError::NameReserved(name.to_string())),
        }
        Ok((address, None))
    }

    /// No other key holds a name above or below this one.
    pub(crate) fn not_nested(
        &self,
        fx: &Effects<'_>,
        name: &Hostname,
        key: &KeyFingerprint,
    ) -> Result<(), ForwardError> {
        let nested = self.ownership.nested(name, key, fx.config.domain());
        let (relation, other) = match nested {
            None => return Ok(()),
            Some(Nested::Under(other)) => ("under", other),
            Some(Nested::Over(other)) => ("above", other),
        };
        Err(ForwardError::NameNested {
            name: name.to_string(),
            relation,
            other: other.to_string(),
        })
    }

    /// One more name would not pass the key's quota.
    fn within_name_quota(
        &self,
        fx: &Effects<'_>,
        key: &KeyFingerprint,
    ) -> Result<(), ForwardError> {
        let quota = fx.config.quota_for(key).names;
        if self.ownership.held_by(key).names >= quota {
            return Err(ForwardError::NameQuota(quota));
        }
        Ok(())
    }

    fn fresh_random_name(
        &self,
        fx: &mut Effects<'_>,
        key: &KeyFingerprint,
    ) -> Result<Address, ForwardError> {
        // Collisions are astronomically rare with a real RNG; the bound only stops a broken one.
        for _ in 0..64 {
            let name = random_name(&mut *fx.rng, fx.config.domain());
            let nested = self
                .ownership
                .nested(&name, key, fx.config.domain())
                .is_some();
            let address = Address::Name(name);
            if !self.ownership.is_held(&address) && !nested {
                return Ok(address);
            }
        }
        Err(ForwardError::NoFreeName)
    }

    /// Ends `key`'s reservation of `address`, if that is what holds it, and its timer.
    pub(crate) fn end_reservation(
        &mut self,
        fx: &mut Effects<'_>,
        address: &Address,
        key: &KeyFingerprint,
    ) {
        if let Claim::Reclaimed { .. } = self.ownership.check(address, key) {
            fx.timers.cancel(&Timer::Reservation(address.clone()));
            self.ownership.forget(address);
        }
    }
}

pub(crate) fn reconnect_key(
    key: &KeyFingerprint,
    bind_address: &str,
    port: u32,
    kind: EndpointKind,
) -> ReconnectKey {
    ReconnectKey {
        owner: key.clone(),
        bind_address: bind_address.to_owned(),
        port,
        kind,
    }
}
