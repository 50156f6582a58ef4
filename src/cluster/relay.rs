//! The relays the protocols hand their traffic to when clustered.
//!
//! They turn a protocol's local event into an envelope body and give it
//! to [`Core::send_with`], which numbers it and picks its targets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::core::{Core, TargetOwned};
use super::envelope::Body;
use crate::hub::subscriptions::InterestChange;
use crate::presence::{Invitation, PresenceDelta, PresenceMessage, PresenceRelay};
use crate::sgc::{Barrier, Publication, Relay};
use crate::sync;

/// The relay the sgc protocol hands its publications to.
pub struct CoreRelay(pub Arc<Core>);

impl Relay for CoreRelay {
    fn publish(&self, p: &Publication) {
        let core = &self.0;
        core.send_with(|| core.route(p), || Body::Publication { publication: p.clone() });
    }

    fn interest_changed(&self, change: &InterestChange) -> Option<Barrier> {
        let name = match change {
            InterestChange::Added(n) | InterestChange::Removed(n) => n.clone(),
        };
        // Send the current truth, read under the send lock, rather than the
        // delta: two racing changes then still leave peers with the right state.
        let core = &self.0;
        let sgc = core.sgc();
        let mut barrier = None;
        core.send_with(
            || TargetOwned::All,
            || {
                if !sgc.is_some_and(|s| s.hub().has_name(&name)) {
                    return Body::InterestRemoved { name };
                }
                // Every peer live now must confirm before the subscriber's
                // reply is written; peers that die are released by peer_down.
                let live = sync::lock(&core.live).clone();
                let (ack, rx) = sync::lock(&core.barriers).open(live);
                barrier = rx;
                Body::InterestAdded { name, ack }
            },
        );
        barrier
    }
}

/// The relay the presence protocol hands its changes to.
pub struct CorePresenceRelay(pub Arc<Core>);

impl PresenceRelay for CorePresenceRelay {
    fn delta(&self, delta: &PresenceDelta) {
        let core = &self.0;
        core.send_with(
            || TargetOwned::All,
            || Body::PresenceDelta {
                pseq: core.pseq.fetch_add(1, Ordering::AcqRel) + 1,
                delta: delta.clone(),
            },
        );
    }

    fn publish(&self, message: &PresenceMessage) {
        self.0
            .send_with(|| TargetOwned::All, || Body::PresenceMessage { message: message.clone() });
    }

    fn invitation(&self, invitation: &Invitation) {
        self.0.send_with(
            || TargetOwned::All,
            || Body::PresenceInvitation { invitation: invitation.clone() },
        );
    }
}
