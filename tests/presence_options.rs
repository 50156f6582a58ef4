//! Presence over real sockets: acknowledgements, Base64 mode, after-events,
//! and the entry points a cluster uses (relay out, remote changes in).

mod presence_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use presence_support::{Client, Server, join, leave, member, request};
use serde_json::{Value, json};
use wscluster::presence::{
    Holding, Invitation, Member, PresenceDelta, PresenceHooks, PresenceMessage, PresenceProtocol,
    PresenceRelay, PresenceSettings, PresenceSnapshot,
};

fn ack(id: &Value) -> Value {
    json!({"jsonrpc": "2.0", "method": "sgc@presence@acknowledgment", "id": id})
}

fn remote(id: &str) -> Member {
    Member { id: id.into(), name: format!("{id} name"), info: format!("{id} info") }
}

fn node_b() -> Arc<str> {
    "node-b".into()
}

// ------------------------------------------------------- acknowledgements

#[tokio::test]
async fn a_client_message_with_an_id_is_acknowledged_before_its_answer() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let register = json!({"jsonrpc": "2.0", "method": "sgc@presence@member@new", "member": member("a"), "id": "m1"});
    c.send(register).await;
    assert_eq!(c.recv().await, ack(&json!("m1")));
    c.expect("sgc@presence@member@new").await;

    c.send(json!({"jsonrpc": "2.0", "method": "sgc@presence@get@members", "id": 42})).await;
    assert_eq!(c.recv().await, ack(&json!(42)), "a numeric id comes back as sent");
    c.expect("sgc@presence@send@members").await;

    // An acknowledgement is not acknowledged.
    c.send(ack(&json!("x"))).await;
    c.expect_silence().await;
}

#[tokio::test]
async fn with_acknowledgements_on_server_messages_carry_fresh_ids_and_are_resent_until_acked() {
    let settings = PresenceSettings {
        acknowledgment: true,
        resend_interval: Duration::from_millis(300),
        ..Default::default()
    };
    let server = Server::with(settings, PresenceHooks::default()).await;
    let mut c = server.client().await;
    c.register("a").await;

    // Nothing acknowledged yet: both come again, with the same ids.
    let mut resent = Vec::new();
    while resent.len() < 2 {
        resent.push(c.recv().await);
    }
    let methods: Vec<&Value> = resent.iter().map(|v| &v["method"]).collect();
    assert!(methods.contains(&&json!("sgc@presence@session")), "{resent:?}");
    assert!(methods.contains(&&json!("sgc@presence@member@new")), "{resent:?}");
    let ids: Vec<&Value> = resent.iter().map(|v| &v["id"]).collect();
    assert!(ids.iter().all(|id| id.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())));
    assert_ne!(ids[0], ids[1], "every message has its own id");

    for v in &resent {
        c.send(ack(&v["id"])).await;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(700), c.recv()).await;
    assert!(quiet.is_err(), "acknowledged messages are not re-sent: {quiet:?}");
}

// ------------------------------------------------------------------ base64

fn decode(v: &Value) -> String {
    let text = v.as_str().expect("a string");
    let encoded = text.strip_prefix("sgc@b64:").unwrap_or_else(|| panic!("not base64: {text}"));
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn base64_mode_writes_every_string_encoded_and_reads_both_forms() {
    let settings = PresenceSettings { base64: true, ..Default::default() };
    let server = Server::with(settings, PresenceHooks::default()).await;
    let (mut c, _) = Client::open(server.addr(), Some(presence_support::PRESENCE)).await.unwrap();

    let session = c.recv().await;
    assert_eq!(session["jsonrpc"], "2.0", "jsonrpc is never encoded");
    assert_eq!(decode(&session["method"]), "sgc@presence@session");
    assert!(uuid::Uuid::parse_str(&decode(&session["message"]["text"])).is_ok());

    // A plain request is read...
    c.send(request("sgc@presence@member@new", json!({"member": member("plain")}))).await;
    let v = c.recv().await;
    assert_eq!(decode(&v["method"]), "sgc@presence@member@new");
    assert_eq!(decode(&v["member"]["name"]), "plain name");

    // ...and so is an encoded one.
    let enc = |s: &str| format!("sgc@b64:{}", base64::engine::general_purpose::STANDARD.encode(s));
    c.send(json!({
        "jsonrpc": "2.0",
        "method": enc("sgc@presence@channel@member@new"),
        "member": {"id": enc("plain")},
        "channel": {"name": enc("émoji ☕")}
    }))
    .await;
    let v = c.recv().await;
    assert_eq!(decode(&v["method"]), "sgc@presence@channel@member@new");
    assert_eq!(decode(&v["channel"]["name"]), "émoji ☕");
    assert_eq!(server.presence().channel_members("émoji ☕").unwrap().len(), 1);
}

// ------------------------------------------------------------ after-events

type Log = Arc<Mutex<Vec<String>>>;

fn logging_hooks(log: &Log) -> PresenceHooks {
    let who = |c: Option<&wscluster::sgc::Client>| if c.is_some() { "local" } else { "remote" };
    let (l1, l2, l3, l4, l5, l6, l7) =
        (log.clone(), log.clone(), log.clone(), log.clone(), log.clone(), log.clone(), log.clone());
    PresenceHooks::default()
        .on_new_member(move |c, m| {
            l1.lock().unwrap().push(format!("{} new member {}", who(c), m.id))
        })
        .on_remove_member(move |c, m| {
            l2.lock().unwrap().push(format!("{} remove member {}", who(c), m.id));
        })
        .on_new_channel(move |c, ch| {
            l3.lock().unwrap().push(format!("{} new channel {ch}", who(c)))
        })
        .on_new_channel_member(move |c, ch, m| {
            l4.lock().unwrap().push(format!("{} join {ch} {}", who(c), m.id));
        })
        .on_remove_channel_member(move |c, ch, m| {
            l5.lock().unwrap().push(format!("{} leave {ch} {}", who(c), m.id));
        })
        .on_error_member_channel(move |_, e| l6.lock().unwrap().push(format!("error {}", e.code)))
        .on_error_publish(move |_, e| l7.lock().unwrap().push(format!("publish error {}", e.code)))
}

#[tokio::test]
async fn after_events_follow_every_roster_change_local_or_remote() {
    let log = Log::default();
    let server = Server::with(PresenceSettings::default(), logging_hooks(&log)).await;
    let mut a = server.member("a").await;
    a.join("a", "room").await;
    a.send(leave("a", "room")).await;
    a.expect("sgc@presence@channel@member@remove").await;
    a.send(request("sgc@presence@member@new", json!({"member": member("a")}))).await;
    a.expect_error(1).await;
    a.send(request(
        "sgc@presence@publish@msg",
        json!({"member": {"id": "a"}, "channel": {"name": "x"}, "message": {"text": "t"}}),
    ))
    .await;
    a.expect_error(5).await;
    a.send(request("sgc@presence@member@remove", json!({"member": {"id": "a"}}))).await;
    a.expect("sgc@presence@member@remove").await;

    server
        .presence()
        .apply_remote(&node_b(), &PresenceDelta::MemberAdded { conn: 1, member: remote("r") });
    server.presence().remove_node(&node_b());

    assert_eq!(
        *log.lock().unwrap(),
        [
            "local new member a",
            "local new channel room",
            "local join room a",
            "local leave room a",
            "error 1",
            "publish error 5",
            "local remove member a",
            "remote new member r",
            "remote remove member r",
        ]
    );
}

// ------------------------------------------------------------- the relay

#[derive(Default)]
struct Recorder {
    deltas: Mutex<Vec<PresenceDelta>>,
    messages: Mutex<Vec<PresenceMessage>>,
    invitations: Mutex<Vec<Invitation>>,
}

impl PresenceRelay for Recorder {
    fn delta(&self, delta: &PresenceDelta) {
        self.deltas.lock().unwrap().push(delta.clone());
    }

    fn publish(&self, message: &PresenceMessage) {
        self.messages.lock().unwrap().push(message.clone());
    }

    fn invitation(&self, invitation: &Invitation) {
        self.invitations.lock().unwrap().push(invitation.clone());
    }
}

#[tokio::test]
async fn local_changes_are_relayed_in_order_as_deltas_of_this_nodes_members() {
    let server = Server::start().await;
    let recorder = Arc::new(Recorder::default());
    server.presence().set_relay(Some(recorder.clone()));

    let mut a = server.member("a").await;
    a.join("a", "room").await;
    a.send(request(
        "sgc@presence@publish@msg",
        json!({"member": {"id": "a"}, "channel": {"name": "room"}, "message": {"text": "hi"}}),
    ))
    .await;
    a.expect("sgc@presence@publish@msg").await;
    a.send(request(
        "sgc@presence@channel@invitation",
        json!({"member": {"id": "a"}, "channel": {"name": "room"}, "members": [{"id": "a"}]}),
    ))
    .await;
    a.expect("sgc@presence@channel@invitation").await;
    a.send(leave("a", "room")).await;
    a.expect("sgc@presence@channel@member@remove").await;
    a.send(request("sgc@presence@member@remove", json!({"member": {"id": "a"}}))).await;
    a.expect("sgc@presence@member@remove").await;
    let mut b = server.member("b").await;
    b.send(join("b", "x")).await;
    b.expect("sgc@presence@channel@member@new").await;
    b.close().await;

    let deltas = recorder.deltas.lock().unwrap().clone();
    let conn_a = match &deltas[0] {
        PresenceDelta::MemberAdded { conn, member } if member.id == "a" => *conn,
        other => panic!("first delta: {other:?}"),
    };
    let conn_b = match &deltas[4] {
        PresenceDelta::MemberAdded { conn, .. } => *conn,
        other => panic!("fifth delta: {other:?}"),
    };
    let room: Arc<str> = "room".into();
    assert_eq!(
        deltas,
        [
            PresenceDelta::MemberAdded { conn: conn_a, member: remote("a") },
            PresenceDelta::ChannelJoined { conn: conn_a, id: "a".into(), channel: room.clone() },
            PresenceDelta::ChannelLeft { conn: conn_a, id: "a".into(), channel: room.clone() },
            PresenceDelta::MemberRemoved { conn: conn_a, id: "a".into() },
            PresenceDelta::MemberAdded { conn: conn_b, member: remote("b") },
            PresenceDelta::ChannelJoined { conn: conn_b, id: "b".into(), channel: "x".into() },
            PresenceDelta::ConnectionClosed { conn: conn_b },
        ]
    );
    let messages = recorder.messages.lock().unwrap().clone();
    assert_eq!(
        messages,
        [PresenceMessage { sender: remote("a"), channel: Some(room.clone()), text: "hi".into() }]
    );
    let invitations = recorder.invitations.lock().unwrap().clone();
    assert_eq!(invitations.len(), 1);
    assert_eq!(invitations[0].invitees, [remote("a")]);

    // Everything relayed survives the trip as JSON.
    for d in &deltas {
        let back: PresenceDelta = serde_json::from_str(&serde_json::to_string(d).unwrap()).unwrap();
        assert_eq!(&back, d);
    }
}

// ----------------------------------------------------- remote changes in

#[tokio::test]
async fn remote_members_reach_local_clients_and_a_lost_node_leaves_no_ghosts() {
    let server = Server::start().await;
    let presence = server.presence();
    let mut u1 = server.member("U1").await;
    u1.join("U1", "chat").await;

    presence.apply_remote(&node_b(), &PresenceDelta::MemberAdded { conn: 1, member: remote("U2") });
    let chat: Arc<str> = "chat".into();
    let joined = PresenceDelta::ChannelJoined { conn: 1, id: "U2".into(), channel: chat };
    presence.apply_remote(&node_b(), &joined);
    assert_eq!(u1.expect("sgc@presence@member@new").await["member"], member("U2"));
    assert_eq!(u1.expect("sgc@presence@channel@member@new").await["member"], member("U2"));
    assert_eq!(u1.member_ids(Some("chat")).await, ["U1", "U2"]);

    // The id is taken cluster-wide.
    let mut late = server.client().await;
    late.send(request("sgc@presence@member@new", json!({"member": member("U2")}))).await;
    late.expect_error(1).await;

    presence.remove_node(&node_b());
    let v = u1.expect("sgc@presence@channel@member@remove").await;
    assert_eq!((&v["channel"], &v["member"]["id"]), (&json!({"name": "chat"}), &json!("U2")));
    assert_eq!(u1.expect("sgc@presence@member@remove").await["member"]["id"], "U2");
    u1.expect_silence().await;

    let mut u4 = server.member("U4").await;
    u4.join("U4", "chat").await;
    assert_eq!(u4.member_ids(Some("chat")).await, ["U1", "U4"]);
}

#[tokio::test]
async fn a_snapshot_replayed_over_the_same_state_is_silent() {
    let server = Server::start().await;
    let mut o = server.member("O").await;
    let snapshot = PresenceSnapshot {
        holdings: vec![Holding { conn: 3, member: remote("R"), channels: vec!["room".into()] }],
    };
    server.presence().replace_node(&node_b(), &snapshot);
    o.expect("sgc@presence@member@new").await;
    server.presence().replace_node(&node_b(), &snapshot);
    o.expect_silence().await;
}

#[tokio::test]
async fn a_member_with_a_session_on_another_node_leaves_only_with_its_last() {
    let server = Server::start().await;
    let mut o = server.member("O").await;
    o.join("O", "room").await;
    let mut m = server.member("M").await;
    m.join("M", "room").await;
    o.expect("sgc@presence@member@new").await;
    o.expect("sgc@presence@channel@member@new").await;

    // Node B admitted M too before hearing of it here.
    let presence = server.presence();
    presence.apply_remote(&node_b(), &PresenceDelta::MemberAdded { conn: 9, member: remote("M") });
    let room: Arc<str> = "room".into();
    presence.apply_remote(
        &node_b(),
        &PresenceDelta::ChannelJoined { conn: 9, id: "M".into(), channel: room },
    );
    o.expect_silence().await;

    m.close().await;
    o.expect_silence().await;
    assert_eq!(o.member_ids(Some("room")).await, ["M", "O"]);

    presence.remove_node(&node_b());
    o.expect("sgc@presence@channel@member@remove").await;
    o.expect("sgc@presence@member@remove").await;
    o.expect_silence().await;
}

#[tokio::test]
async fn removing_a_member_held_elsewhere_too_is_confirmed_to_the_requester_only() {
    let server = Server::start().await;
    let mut o = server.member("O").await;
    let mut m = server.member("M").await;
    o.expect("sgc@presence@member@new").await;
    server
        .presence()
        .apply_remote(&node_b(), &PresenceDelta::MemberAdded { conn: 9, member: remote("M") });

    m.send(request("sgc@presence@member@remove", json!({"member": {"id": "M"}}))).await;
    assert_eq!(m.expect("sgc@presence@member@remove").await["member"]["id"], "M");
    o.expect_silence().await;
    assert_eq!(o.member_ids(None).await, ["M", "O"]);
}

#[tokio::test]
async fn messages_and_invitations_from_other_nodes_reach_local_connections() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    a.join("a", "room").await;
    let mut other = server.member("other").await;
    a.expect("sgc@presence@member@new").await;

    let presence: &PresenceProtocol = server.presence();
    let message =
        PresenceMessage { sender: remote("far"), channel: Some("room".into()), text: "hi".into() };
    assert_eq!(presence.deliver_message(&message), 1);
    let v = a.expect("sgc@presence@publish@msg").await;
    assert_eq!((&v["member"], &v["message"]), (&member("far"), &json!({"text": "hi"})));
    other.expect_silence().await;

    let invitation = Invitation {
        inviter: remote("far"),
        channel: "party".into(),
        invitees: vec![remote("other")],
    };
    assert_eq!(presence.deliver_invitation(&invitation), 1);
    let v = other.expect("sgc@presence@channel@invitation").await;
    assert_eq!(v["members"], json!([member("other")]));
    a.expect_silence().await;
}
