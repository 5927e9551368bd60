//! One-time console tickets: AcquireTicket/AcquireMksTicket issue a random ticket bound to one
//! VM and to the session that acquired it; the console endpoint redeems it once and checks its
//! holder again then (`console::session`). A ticket is gone after its first use and expires
//! unused after [`TICKET_LIFETIME`]. The clock is injected so expiry is testable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vireo_api::MoRef;

/// How long an unused ticket stays valid.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(30);

/// Where the store reads the time from.
pub type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

/// Why a ticket could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The system's random source failed.
    #[error("cannot draw a random ticket: {0}")]
    Random(getrandom::Error),
}

/// Why a ticket did not unlock the console.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedeemError {
    /// Never issued, or already used.
    #[error("unknown or already used ticket")]
    Unknown,
    /// Issued, but not used within its lifetime.
    #[error("the ticket expired unused")]
    Expired,
}

/// Who acquired a ticket: the console endpoint checks them again when the ticket is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The session key.
    pub session: String,
    /// The session's user.
    pub user: String,
}

/// What a used ticket unlocks, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    /// The VM whose console it opens.
    pub vm: MoRef,
    /// Who acquired it.
    pub holder: Holder,
}

struct Issued {
    redeemed: Redeemed,
    expires: Instant,
}

/// The tickets issued and not yet used or expired.
pub struct TicketStore {
    clock: Clock,
    issued: Mutex<HashMap<String, Issued>>,
}

impl Default for TicketStore {
    fn default() -> Self {
        TicketStore::with_clock(Box::new(Instant::now))
    }
}

impl TicketStore {
    /// A store reading the time from `clock`.
    pub fn with_clock(clock: Clock) -> TicketStore {
        TicketStore {
            clock,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// A new ticket for the console of `vm`, acquired by `holder`.
    pub fn issue(&self, vm: &MoRef, holder: Holder) -> Result<String, IssueError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(IssueError::Random)?;
        let ticket: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = (self.clock)();
        let mut issued = crate::locks::lock(&self.issued);
        issued.retain(|_, t| t.expires > now);
        issued.insert(
            ticket.clone(),
            Issued {
                redeemed: Redeemed {
                    vm: vm.clone(),
                    holder,
                },
                expires: now + TICKET_LIFETIME,
            },
        );
        Ok(ticket)
    }

    /// Uses up `ticket`: the VM it unlocks and its holder, or why it does not.
    pub fn redeem(&self, ticket: &str) -> Result<Redeemed, RedeemError> {
        let now = (self.clock)();
        let issued = crate::locks::lock(&self.issued)
            .remove(ticket)
            .ok_or(RedeemError::Unknown)?;
        if issued.expires <= now {
            return Err(RedeemError::Expired);
        }
        Ok(issued.redeemed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn holder() -> Holder {
        Holder {
            session: "52a1".into(),
            user: "root".into(),
        }
    }

    /// A store whose clock moves only when the test says so.
    fn store_with_manual_clock() -> (TicketStore, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let reader = now.clone();
        let store = TicketStore::with_clock(Box::new(move || *reader.lock().unwrap()));
        (store, now)
    }

    #[test]
    fn a_ticket_opens_its_vm_once() {
        let (store, _) = store_with_manual_clock();
        let vm = MoRef::new("VirtualMachine", "7");
        let ticket = store.issue(&vm, holder()).unwrap();
        assert_eq!(ticket.len(), 32);
        assert_ne!(store.issue(&vm, holder()).unwrap(), ticket);
        let redeemed = store.redeem(&ticket).unwrap();
        assert_eq!((redeemed.vm, redeemed.holder), (vm, holder()));
        assert_eq!(store.redeem(&ticket), Err(RedeemError::Unknown));
        assert_eq!(store.redeem("not-a-ticket"), Err(RedeemError::Unknown));
    }

    #[test]
    fn unused_tickets_expire_after_their_lifetime() {
        let (store, now) = store_with_manual_clock();
        let vm = MoRef::new("VirtualMachine", "1");
        let late = store.issue(&vm, holder()).unwrap();
        let in_time = store.issue(&vm, holder()).unwrap();
        *now.lock().unwrap() += TICKET_LIFETIME - Duration::from_millis(1);
        assert_eq!(store.redeem(&in_time).map(|r| r.vm), Ok(vm.clone()));
        *now.lock().unwrap() += Duration::from_millis(1);
        assert_eq!(store.redeem(&late), Err(RedeemError::Expired));
        assert_eq!(store.redeem(&late), Err(RedeemError::Unknown));
    }

    #[test]
    fn expired_tickets_are_dropped_when_new_ones_are_issued() {
        let (store, now) = store_with_manual_clock();
        let vm = MoRef::new("VirtualMachine", "1");
        let old = store.issue(&vm, holder()).unwrap();
        *now.lock().unwrap() += TICKET_LIFETIME;
        store.issue(&vm, holder()).unwrap();
        assert_eq!(store.issued.lock().unwrap().len(), 1);
        assert_eq!(store.redeem(&old), Err(RedeemError::Unknown));
    }
}
