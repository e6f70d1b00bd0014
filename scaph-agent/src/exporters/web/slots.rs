//! The connection caps: at most `total` connections, and at most
//! `per_client` from one client address (an IPv6 client is its /64), so one
//! peer cannot take every connection a scraper needs.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Slots {
    total: Arc<Semaphore>,
    per_client: usize,
    clients: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place; given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
    client: IpAddr,
}

impl Slots {
    #[must_use]
    pub fn new(total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            per_client: per_client.max(1),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `peer`, or None when a cap is reached.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let client = client_of(peer);
        let mut clients = self.clients.lock().ok()?;
        let count = clients.entry(client).or_insert(0);
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(Slot {
            _permit: permit,
            slots: self.clone(),
            client,
        })
    }

    /// Connections open now.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.clients.lock().map(|c| c.values().sum()).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut clients) = self.slots.clients.lock() {
            if let Some(count) = clients.get_mut(&self.client) {
                *count -= 1;
                if *count == 0 {
                    clients.remove(&self.client);
                }
            }
        }
    }
}

/// The address a cap applies to: IPv4 as is, IPv6 by its /64.
fn client_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_client_and_in_total() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.take(a).expect("first from a");
        let _a2 = slots.take(a).expect("second from a");
        assert!(slots.take(a).is_none(), "a third from a is over its cap");
        let _b1 = slots.take(b).expect("b has its own cap");
        assert!(slots.take(b).is_none(), "over the total cap");
        drop(a1);
        assert_eq!(slots.in_use(), 2);
        assert!(slots.take(a).is_some(), "a's slot came back");
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_mapped_ipv4_is_ipv4() {
        let slots = Slots::new(10, 1);
        let _one = slots
            .take("2001:db8:1:2::1".parse().unwrap())
            .expect("first");
        assert!(
            slots.take("2001:db8:1:2::ffff".parse().unwrap()).is_none(),
            "same /64"
        );
        assert!(
            slots.take("2001:db8:1:3::1".parse().unwrap()).is_some(),
            "another /64"
        );
        let _v4 = slots.take("192.0.2.1".parse().unwrap()).expect("v4");
        assert!(
            slots.take("::ffff:192.0.2.1".parse().unwrap()).is_none(),
            "the same client, mapped"
        );
    }
}
