//! A fixed number of slots handed out fairly across clients: when slots are short, each client
//! (an IPv4 address, or an IPv6 /64 — what one host can easily take many addresses from) waits
//! in its own queue and the clients take turns, round-robin, so a flood from one client delays
//! another's request by about one slot's use rather than by the whole flood. Used for the
//! password checks of logins (`crate::logins`).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::locks::lock;

/// The slots and the clients waiting for one.
pub struct FairSlots {
    queue: Mutex<Queue>,
}

struct Queue {
    free: usize,
    /// Clients with waiters, in the order of their next turn, each with its waiters in arrival
    /// order.
    clients: VecDeque<(IpAddr, VecDeque<oneshot::Sender<Slot>>)>,
}

/// A slot in use; dropping it hands it to the next waiter, or frees it.
pub struct Slot {
    slots: Arc<FairSlots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release();
    }
}

impl FairSlots {
    /// `count` slots (at least one).
    pub fn new(count: usize) -> Arc<FairSlots> {
        Arc::new(FairSlots {
            queue: Mutex::new(Queue {
                free: count.max(1),
                clients: VecDeque::new(),
            }),
        })
    }

    /// Waits for a slot for `client`, taking turns with the other clients waiting.
    pub async fn acquire(self: &Arc<Self>, client: IpAddr) -> Slot {
        loop {
            let waiting = {
                let mut queue = lock(&self.queue);
                if queue.free > 0 && queue.clients.is_empty() {
                    queue.free -= 1;
                    return Slot {
                        slots: self.clone(),
                    };
                }
                let (sender, receiver) = oneshot::channel();
                let client = client_key(client);
                match queue.clients.iter_mut().find(|(key, _)| *key == client) {
                    Some((_, waiters)) => waiters.push_back(sender),
                    None => queue.clients.push_back((client, VecDeque::from([sender]))),
                }
                receiver
            };
            // A waiter's sender is only ever consumed by sending it a slot.
            if let Ok(slot) = waiting.await {
                return slot;
            }
        }
    }

    /// Hands a slot that was just given back to the next client's first waiter (the client
    /// then goes to the end of the turn order), or frees it.
    fn release(self: &Arc<Self>) {
        let mut queue = lock(&self.queue);
        while let Some((client, mut waiters)) = queue.clients.pop_front() {
            let next = waiters.pop_front();
            if !waiters.is_empty() {
                queue.clients.push_back((client, waiters));
            }
            let Some(next) = next else { continue };
            let slot = Slot {
                slots: self.clone(),
            };
            match next.send(slot) {
                Ok(()) => return,
                // That waiter has gone (its client hung up): the slot must not come back here
                // through Drop while the queue is locked, so it is forgotten and passed on.
                Err(slot) => std::mem::forget(slot),
            }
        }
        queue.free += 1;
    }
}

/// The client a request counts against: its IPv4 address (IPv4-mapped IPv6 included), or the
/// /64 of its IPv6 address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Starts a waiter for `client` that records `name` in `order` once it holds a slot, and
    /// lets it queue up.
    async fn waiter(
        slots: &Arc<FairSlots>,
        client: &str,
        name: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> tokio::task::JoinHandle<()> {
        let (slots, order, client) = (slots.clone(), order.clone(), ip(client));
        let task = tokio::spawn(async move {
            let _slot = slots.acquire(client).await;
            lock(&order).push(name);
        });
        tokio::task::yield_now().await;
        task
    }

    #[tokio::test]
    async fn waiting_clients_take_turns_whatever_their_numbers() {
        let slots = FairSlots::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = slots.acquire(ip("10.0.0.1")).await;
        let mut tasks = Vec::new();
        for name in ["flood-1", "flood-2", "flood-3", "flood-4"] {
            tasks.push(waiter(&slots, "10.0.0.1", name, &order).await);
        }
        tasks.push(waiter(&slots, "10.0.0.2", "other", &order).await);
        tasks.push(waiter(&slots, "2001:db8::1", "v6-a", &order).await);
        tasks.push(waiter(&slots, "2001:db8::2", "v6-b", &order).await);
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *lock(&order),
            ["flood-1", "other", "v6-a", "flood-2", "v6-b", "flood-3", "flood-4"],
            "one turn per client in turn, one /64 counting as one client"
        );
        assert_eq!(lock(&slots.queue).free, 1, "the slot came back");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_passes_its_turn_on() {
        let slots = FairSlots::new(1);
        let held = slots.acquire(ip("10.0.0.1")).await;
        let gone = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(ip("10.0.0.2")).await })
        };
        tokio::task::yield_now().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let next = waiter(&slots, "10.0.0.3", "next", &order).await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        next.await.unwrap();
        assert_eq!(*lock(&order), ["next"]);
        assert_eq!(lock(&slots.queue).free, 1);
    }
}
