//! Presence over real sockets: joining and leaving channels, publishing,
//! member lists and invitations, with every refusal a client can earn.

mod presence_support;

use presence_support::{Server, join, leave, member, request};
use serde_json::{Value, json};
use wscluster::presence::{PresenceHooks, PresenceSettings};

fn publish(id: &str, channel: Option<&str>, text: &str) -> Value {
    let mut fields = json!({"member": {"id": id}, "message": {"text": text}});
    if let Some(c) = channel {
        fields["channel"] = json!({"name": c});
    }
    request("sgc@presence@publish@msg", fields)
}

fn invite(id: &str, channel: &str, invitees: &[&str]) -> Value {
    let members: Vec<Value> = invitees.iter().map(|i| json!({"id": i})).collect();
    request(
        "sgc@presence@channel@invitation",
        json!({"member": {"id": id}, "channel": {"name": channel}, "members": members}),
    )
}

#[tokio::test]
async fn a_join_reaches_the_channel_with_the_members_name_and_info() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    let mut b = server.member("b").await;
    let mut outsider = server.member("c").await;
    a.expect("sgc@presence@member@new").await;
    a.expect("sgc@presence@member@new").await;
    b.expect("sgc@presence@member@new").await;
    a.join("a", "room").await;

    b.send(join("b", "room")).await;
    let expected = json!({
        "jsonrpc": "2.0",
        "method": "sgc@presence@channel@member@new",
        "member": member("b"),
        "channel": {"name": "room"}
    });
    assert_eq!(b.recv().await, expected);
    assert_eq!(a.recv().await, expected);
    outsider.expect_silence().await;
    assert_eq!(server.presence().channel_members("room").unwrap().len(), 2);
}

#[tokio::test]
async fn joining_a_channel_twice_is_code_11() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    a.join("a", "room").await;
    a.send(join("a", "room")).await;
    let v = a.expect_error(11).await;
    assert_eq!((&v["channel"], &v["member"]), (&json!({"name": "room"}), &member("a")));
}

#[tokio::test]
async fn a_leave_reaches_the_channel_and_the_leaver_only() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    let mut b = server.member("b").await;
    let mut outsider = server.member("c").await;
    a.expect("sgc@presence@member@new").await;
    a.expect("sgc@presence@member@new").await;
    b.expect("sgc@presence@member@new").await;
    a.join("a", "room").await;
    b.join("b", "room").await;
    a.expect("sgc@presence@channel@member@new").await;

    b.send(leave("b", "room")).await;
    let expected = json!({
        "jsonrpc": "2.0",
        "method": "sgc@presence@channel@member@remove",
        "member": member("b"),
        "channel": {"name": "room"}
    });
    assert_eq!(b.recv().await, expected);
    assert_eq!(a.recv().await, expected);
    outsider.expect_silence().await;
    assert_eq!(a.member_ids(Some("room")).await, ["a"]);
}

#[tokio::test]
async fn leaving_a_channel_nobody_is_in_is_code_5() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    a.send(leave("a", "nowhere")).await;
    let v = a.expect_error(5).await;
    assert_eq!(v["channel"], json!({"name": "nowhere"}));
}

#[tokio::test]
async fn leaving_a_channel_one_did_not_join_is_code_12() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    let mut b = server.member("b").await;
    a.expect("sgc@presence@member@new").await;
    b.join("b", "room").await;
    a.send(leave("a", "room")).await;
    a.expect_error(12).await;
}

#[tokio::test]
async fn the_last_leave_drops_the_channel_so_the_next_join_creates_it_again() {
    let created = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = created.clone();
    let hooks = PresenceHooks::default().before_new_channel(move |_, channel, _| {
        log.lock().unwrap().push(channel.to_owned());
        true
    });
    let server = Server::with(PresenceSettings::default(), hooks).await;
    let mut a = server.member("a").await;
    a.join("a", "room").await;
    a.send(leave("a", "room")).await;
    a.expect("sgc@presence@channel@member@remove").await;
    a.join("a", "room").await;
    assert_eq!(*created.lock().unwrap(), ["room", "room"]);
}

#[tokio::test]
async fn the_application_can_refuse_a_new_channel_with_code_6() {
    let hooks = PresenceHooks::default().before_new_channel(|_, channel, _| channel != "secret");
    let server = Server::with(PresenceSettings::default(), hooks).await;
    let mut a = server.member("a").await;
    a.send(join("a", "secret")).await;
    let v = a.expect_error(6).await;
    assert_eq!(v["channel"], json!({"name": "secret"}));
    a.join("a", "open").await;
}

#[tokio::test]
async fn the_application_can_refuse_a_channel_member_with_code_10() {
    let hooks = PresenceHooks::default().before_new_channel_member(|_, _, m| m.id != "banned");
    let server = Server::with(PresenceSettings::default(), hooks).await;
    let mut ok = server.member("ok").await;
    let mut banned = server.member("banned").await;
    ok.expect("sgc@presence@member@new").await;
    ok.join("ok", "room").await;
    banned.send(join("banned", "room")).await;
    banned.expect_error(10).await;
}

#[tokio::test]
async fn one_member_joins_at_most_the_configured_channels() {
    let settings = PresenceSettings { max_channels_per_member: 1, ..Default::default() };
    let server = Server::with(settings, PresenceHooks::default()).await;
    let mut a = server.member("a").await;
    a.join("a", "one").await;
    a.send(join("a", "two")).await;
    a.expect_error(10).await;
}

#[tokio::test]
async fn a_publication_reaches_the_channel_with_the_senders_full_member() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    let mut b = server.member("b").await;
    let mut outsider = server.member("c").await;
    a.expect("sgc@presence@member@new").await;
    a.expect("sgc@presence@member@new").await;
    b.expect("sgc@presence@member@new").await;
    a.join("a", "room").await;
    b.join("b", "room").await;
    a.expect("sgc@presence@channel@member@new").await;

    a.send(publish("a", Some("room"), "hello")).await;
    let expected = json!({
        "jsonrpc": "2.0",
        "method": "sgc@presence@publish@msg",
        "member": member("a"),
        "channel": {"name": "room"},
        "message": {"text": "hello"}
    });
    assert_eq!(a.recv().await, expected);
    assert_eq!(b.recv().await, expected);
    outsider.expect_silence().await;
}

#[tokio::test]
async fn a_publication_without_a_channel_reaches_every_member() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    let mut b = server.member("b").await;
    let mut bystander = server.client().await;
    a.expect("sgc@presence@member@new").await;

    a.send(publish("a", None, "all")).await;
    for c in [&mut a, &mut b] {
        let v = c.expect("sgc@presence@publish@msg").await;
        assert_eq!((&v["message"], &v["channel"]), (&json!({"text": "all"}), &json!({"name": ""})));
    }
    // An empty channel name means the same, as clients send it.
    a.send(publish("a", Some(""), "again")).await;
    b.expect("sgc@presence@publish@msg").await;
    bystander.expect_silence().await;
}

#[tokio::test]
async fn publishing_refusals_carry_their_codes_and_the_message() {
    let hooks = PresenceHooks::default().before_publish(|_, _, _, text| !text.contains("spam"));
    let server = Server::with(PresenceSettings::default(), hooks).await;
    let mut unregistered = server.client().await;
    unregistered.send(publish("ghost", None, "hi")).await;
    unregistered.expect_error(3).await;

    let mut a = server.member("a").await;
    a.send(publish("a", Some("nowhere"), "hi")).await;
    a.expect_error(5).await;

    a.join("a", "room").await;
    a.send(publish("a", Some("room"), "buy spam")).await;
    let v = a.expect_error(20).await;
    assert_eq!(v["message"], json!({"text": "buy spam"}));
    assert_eq!(v["channel"], json!({"name": "room"}));
    a.expect_silence().await;
}

#[tokio::test]
async fn the_application_can_refuse_a_member_list_with_code_30() {
    let hooks = PresenceHooks::default().before_get_members(|_, channel| channel.is_some());
    let server = Server::with(PresenceSettings::default(), hooks).await;
    let mut a = server.member("a").await;
    a.join("a", "room").await;
    a.send(request("sgc@presence@get@members", json!({}))).await;
    a.expect_error(30).await;
    assert_eq!(a.member_ids(Some("room")).await, ["a"]);
}

#[tokio::test]
async fn an_invitation_reaches_the_invitees_only() {
    let server = Server::start().await;
    let mut host = server.member("host").await;
    let mut guest = server.member("guest").await;
    let mut other = server.member("other").await;
    for _ in 0..2 {
        host.expect("sgc@presence@member@new").await;
    }
    guest.expect("sgc@presence@member@new").await;

    host.send(invite("host", "party", &["guest"])).await;
    let v = guest.recv().await;
    assert_eq!(
        v,
        json!({
            "jsonrpc": "2.0",
            "method": "sgc@presence@channel@invitation",
            "member": member("host"),
            "channel": {"name": "party"},
            "members": [member("guest")]
        })
    );
    host.expect_silence().await;
    other.expect_silence().await;

    // The invitee accepts by joining.
    guest.join("guest", "party").await;
}

#[tokio::test]
async fn inviting_an_unknown_member_is_code_3_and_the_known_ones_are_still_invited() {
    let server = Server::start().await;
    let mut host = server.member("host").await;
    let mut guest = server.member("guest").await;
    host.expect("sgc@presence@member@new").await;

    host.send(invite("host", "party", &["nobody", "guest"])).await;
    let v = host.expect_error(3).await;
    assert_eq!((&v["member"]["id"], &v["channel"]), (&json!("nobody"), &json!({"name": "party"})));
    guest.expect("sgc@presence@channel@invitation").await;
}

#[tokio::test]
async fn an_invitation_needs_a_channel_and_invitees() {
    let server = Server::start().await;
    let mut host = server.member("host").await;
    host.send(invite("host", "party", &[])).await;
    host.expect_error(-32602).await;
    host.send(request("sgc@presence@channel@invitation", json!({"members": [{"id": "x"}]}))).await;
    host.expect_error(-32602).await;
    let mut stranger = server.client().await;
    stranger.send(invite("host", "party", &["host"])).await;
    stranger.expect_error(3).await;
}
