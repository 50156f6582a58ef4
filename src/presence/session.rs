//! Per-connection state of the presence protocol.
//!
//! Little lives here: which connection this is, who the hooks are told
//! about, and the server messages awaiting acknowledgement. The members a
//! connection registered live in the roster, keyed by its connection id,
//! so that everything about membership is decided in one place.

use crate::hub::acks::PendingAcks;
use crate::hub::subscriptions::ConnId;
use crate::sgc::Client;

/// Protocol state of one presence connection.
pub struct PresenceSession {
    /// The connection in the hub and in the roster.
    pub conn: ConnId,
    /// Who the hooks are told about; its session id is the default member id.
    pub client: Client,
    /// Server messages the client has not acknowledged yet.
    pub acks: PendingAcks,
}
