//! Presence over real sockets: the handshake, the session message, members
//! coming and going, who owns a member, and malformed input.

mod presence_support;

use presence_support::{Client, PRESENCE, Server, leave, member, request};
use serde_json::{Value, json};
use tokio_websockets::Message;
use wscluster::presence::{PresenceHooks, PresenceSettings};

fn member_new(fields: Value) -> Value {
    request("sgc@presence@member@new", json!({ "member": fields }))
}

#[tokio::test]
async fn offering_presence_gets_it_named_and_a_session_message_first() {
    let server = Server::start().await;
    let (mut c, response) = Client::open(server.addr(), Some(PRESENCE)).await.unwrap();
    let named = response.headers().get("sec-websocket-protocol").unwrap();
    assert_eq!(named, PRESENCE);

    let v = c.recv().await;
    let sid = v["message"]["text"].as_str().unwrap().to_owned();
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "method": "sgc@presence@session", "message": {"text": sid}})
    );
    assert!(uuid::Uuid::parse_str(&sid).is_ok(), "a guid: {sid}");
}

#[tokio::test]
async fn a_client_offering_both_protocols_gets_the_one_it_listed_first() {
    let server = Server::start().await;
    let (mut c, r) =
        Client::open(server.addr(), Some("presence.esegece.com, esegece.com")).await.unwrap();
    assert_eq!(r.headers().get("sec-websocket-protocol").unwrap(), PRESENCE);
    c.read_session().await;

    let (mut c, r) =
        Client::open(server.addr(), Some("esegece.com, presence.esegece.com")).await.unwrap();
    assert_eq!(r.headers().get("sec-websocket-protocol").unwrap(), "esegece.com");
    assert_eq!(c.recv().await["result"]["method"], "sgc@session");
}

#[tokio::test]
async fn no_sub_protocol_still_means_sgc() {
    let server = Server::start().await;
    let (mut c, r) = Client::open(server.addr(), None).await.unwrap();
    assert!(r.headers().get("sec-websocket-protocol").is_none());
    assert_eq!(c.recv().await["result"]["method"], "sgc@session");
}

#[tokio::test]
async fn a_new_member_is_announced_to_every_member_and_only_members() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    let mut bystander = server.client().await;
    let mut b = server.client().await;

    b.send(member_new(member("b"))).await;
    let expected =
        json!({"jsonrpc": "2.0", "method": "sgc@presence@member@new", "member": member("b")});
    assert_eq!(b.recv().await, expected);
    assert_eq!(a.recv().await, expected);
    bystander.expect_silence().await;
}

#[tokio::test]
async fn the_member_id_defaults_to_the_session_id() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.send(member_new(json!({"name": "Ann"}))).await;
    let v = c.expect("sgc@presence@member@new").await;
    assert_eq!(v["member"], json!({"id": c.session_id, "name": "Ann", "info": ""}));

    // Removing without an id removes the session's member.
    c.send(request("sgc@presence@member@remove", json!({}))).await;
    let v = c.expect("sgc@presence@member@remove").await;
    assert_eq!(v["member"]["id"], c.session_id.as_str());
    assert!(server.presence().members().is_empty());
}

#[tokio::test]
async fn an_id_in_use_is_refused_with_code_1_and_the_connection_stays() {
    let server = Server::start().await;
    let mut a = server.member("taken").await;
    let mut b = server.client().await;

    b.send(member_new(member("taken"))).await;
    let v = b.expect_error(1).await;
    assert_eq!(v["member"]["id"], "taken");
    assert!(v["error"]["text"].as_str().unwrap().contains("taken"), "{v}");
    a.expect_silence().await;
    b.register("free").await;
}

#[tokio::test]
async fn the_application_can_refuse_a_member_with_code_2() {
    let hooks = PresenceHooks::default().before_new_member(|_, m| m.name != "Spam");
    let server = Server::with(PresenceSettings::default(), hooks).await;
    let mut c = server.client().await;
    c.send(member_new(json!({"id": "s", "name": "Spam"}))).await;
    let v = c.expect_error(2).await;
    assert_eq!(v["member"], json!({"id": "s", "name": "Spam", "info": ""}));
    assert!(server.presence().members().is_empty());
}

#[tokio::test]
async fn one_connection_registers_at_most_the_configured_members() {
    let settings = PresenceSettings { max_members_per_connection: 2, ..Default::default() };
    let server = Server::with(settings, PresenceHooks::default()).await;
    let mut c = server.client().await;
    c.register("one").await;
    c.register("two").await;
    c.send(member_new(member("three"))).await;
    c.expect_error(2).await;
}

#[tokio::test]
async fn removing_a_member_announces_its_channels_then_itself() {
    // Channel notices go to the channel's members, member@remove to every
    // member; the leaver hears all of it.
    let server = Server::start().await;
    let mut a = server.member("a").await;
    let mut b = server.member("b").await;
    a.expect("sgc@presence@member@new").await;
    a.join("a", "x").await;
    b.join("b", "x").await;
    b.join("b", "y").await;
    a.expect("sgc@presence@channel@member@new").await;

    b.send(request("sgc@presence@member@remove", json!({"member": {"id": "b"}}))).await;
    for (name, c) in [("b", &mut b), ("a", &mut a)] {
        let v = c.expect("sgc@presence@channel@member@remove").await;
        assert_eq!((&v["channel"], &v["member"]), (&json!({"name": "x"}), &member("b")), "{name}");
        if name == "b" {
            let v = c.expect("sgc@presence@channel@member@remove").await;
            assert_eq!(v["channel"], json!({"name": "y"}));
        }
        let v = c.expect("sgc@presence@member@remove").await;
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "method": "sgc@presence@member@remove", "member": member("b")})
        );
    }
    assert_eq!(a.member_ids(None).await, ["a"]);
    b.expect_silence().await;
}

#[tokio::test]
async fn removing_a_member_this_connection_does_not_hold_is_code_3() {
    let server = Server::start().await;
    let _owner = server.member("owned").await;
    let mut c = server.member("mine").await;
    c.send(request("sgc@presence@member@remove", json!({"member": {"id": "owned"}}))).await;
    c.expect_error(3).await;
    c.send(request("sgc@presence@member@remove", json!({"member": {"id": "nobody"}}))).await;
    c.expect_error(3).await;
    assert_eq!(c.member_ids(None).await, ["mine", "owned"]);
}

#[tokio::test]
async fn acting_as_another_connections_member_is_code_3() {
    let server = Server::start().await;
    let mut owner = server.member("owned").await;
    let mut other = server.client().await;
    other.send(presence_support::join("owned", "room")).await;
    let v = other.expect_error(3).await;
    assert_eq!(v["channel"], json!({"name": "room"}));
    other.send(leave("owned", "room")).await;
    other.expect_error(3).await;
    owner.expect_silence().await;
}

#[tokio::test]
async fn a_closed_connection_loses_every_member_it_registered_with_full_notices() {
    let server = Server::start().await;
    let mut observer = server.member("observer").await;
    observer.join("observer", "room").await;

    let mut leaver = server.client().await;
    leaver.register("chosen-id").await;
    leaver.register("second").await;
    leaver.join("chosen-id", "room").await;
    for _ in 0..3 {
        observer.recv().await; // two member@new, one channel@member@new
    }

    leaver.close().await;
    let v = observer.expect("sgc@presence@channel@member@remove").await;
    assert_eq!((&v["channel"]["name"], &v["member"]["id"]), (&json!("room"), &json!("chosen-id")));
    let v = observer.expect("sgc@presence@member@remove").await;
    assert_eq!(v["member"], member("chosen-id"));
    let v = observer.expect("sgc@presence@member@remove").await;
    assert_eq!(v["member"]["id"], "second");
    observer.expect_silence().await;
    assert_eq!(observer.member_ids(None).await, ["observer"]);
}

#[tokio::test]
async fn a_member_that_reconnects_at_once_is_seen_consistently_for_50_cycles() {
    let server = Server::start().await;
    let mut observer = server.member("O").await;
    observer.join("O", "room").await;
    let mut m = server.member("M").await;
    m.join("M", "room").await;
    observer.expect("sgc@presence@member@new").await;
    observer.expect("sgc@presence@channel@member@new").await;

    for cycle in 0..50 {
        // The close handshake completes only once the old member is gone,
        // so the new connection can take the same id straight away.
        m.close().await;
        m = server.member("M").await;
        m.join("M", "room").await;

        let seen: Vec<(String, String)> = {
            let mut seen = Vec::new();
            for _ in 0..4 {
                let v = observer.recv().await;
                let method = v["method"].as_str().unwrap().trim_start_matches("sgc@presence@");
                seen.push((method.to_owned(), v["member"]["id"].as_str().unwrap().to_owned()));
            }
            seen
        };
        let expected =
            ["channel@member@remove", "member@remove", "member@new", "channel@member@new"];
        let methods: Vec<&str> = seen.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(methods, expected, "cycle {cycle}");
        assert!(seen.iter().all(|(_, id)| id == "M"), "cycle {cycle}: {seen:?}");
    }
    assert_eq!(observer.member_ids(Some("room")).await, ["M", "O"]);
}

#[tokio::test]
async fn get_members_lists_the_server_or_one_channel() {
    let server = Server::start().await;
    let mut a = server.member("a").await;
    let mut b = server.member("b").await;
    b.join("b", "room").await;
    a.expect("sgc@presence@member@new").await;

    a.send(request(
        "sgc@presence@get@members",
        json!({"member": {"id": "a"}, "channel": {"name": "room"}}),
    ))
    .await;
    let v = a.expect("sgc@presence@send@members").await;
    assert_eq!(
        v,
        json!({
            "jsonrpc": "2.0",
            "method": "sgc@presence@send@members",
            "member": member("a"),
            "channel": {"name": "room"},
            "members": [member("b")]
        })
    );
    assert_eq!(a.member_ids(None).await, ["a", "b"]);

    // An empty name means the whole server, as clients send it.
    a.send(request("sgc@presence@get@members", json!({"channel": {"name": ""}}))).await;
    let v = a.expect("sgc@presence@send@members").await;
    assert_eq!(v["members"].as_array().unwrap().len(), 2);
    assert_eq!(v["channel"], json!({"name": ""}));
}

#[tokio::test]
async fn get_members_of_a_channel_nobody_is_in_is_code_5() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.send(request("sgc@presence@get@members", json!({"channel": {"name": "void"}}))).await;
    let v = c.expect_error(5).await;
    assert_eq!(v["channel"], json!({"name": "void"}));
}

#[tokio::test]
async fn malformed_input_is_answered_and_the_connection_stays() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let cases = [
        ("not json", -32700),
        ("[1, 2]", -32700),
        (r#"{"jsonrpc": "1.0", "method": "sgc@presence@member@new"}"#, -32600),
        (r#"{"jsonrpc": "2.0"}"#, -32600),
        (r#"{"jsonrpc": "2.0", "method": "sgc@presence@member@new", "id": {}}"#, -32600),
        (r#"{"jsonrpc": "2.0", "method": "sgc@presence@nonsense"}"#, -32601),
        (r#"{"jsonrpc": "2.0", "method": "sgc@presence@member@new", "member": "x"}"#, -32602),
        (r#"{"jsonrpc": "2.0", "method": "sgc@presence@channel@member@new"}"#, -32602),
        (r#"{"jsonrpc": "2.0", "method": "sgc@presence@publish@msg", "message": 5}"#, -32602),
    ];
    for (text, code) in cases {
        c.send_text(text).await;
        let v = c.expect_error(code).await;
        assert!(v.get("id").is_none(), "{text}: {v}");
    }
    c.send_frame(Message::binary(vec![1u8, 2, 3])).await;
    c.expect_error(-32600).await;
    c.register("still-served").await;
}

#[tokio::test]
async fn a_long_or_control_character_channel_name_is_invalid_params() {
    let server = Server::start().await;
    let mut c = server.member("m").await;
    c.send(presence_support::join("m", &"x".repeat(256))).await;
    c.expect_error(-32602).await;
    c.send(presence_support::join("m", "bad\nname")).await;
    c.expect_error(-32602).await;
    c.join("m", &"x".repeat(255)).await;
}

#[tokio::test]
async fn shutdown_closes_presence_clients_with_1001() {
    let server = Server::start().await;
    let mut c = server.member("m").await;
    let stop = tokio::spawn(server.shutdown());
    c.expect_close(1001).await;
    stop.await.unwrap();
}

#[tokio::test]
async fn a_presence_client_is_not_an_sgc_subscriber() {
    // The two protocols have separate hubs: an sgc broadcast reaches sgc
    // clients only.
    let server = Server::start().await;
    let mut p = server.member("p").await;
    let (mut s, _) = Client::open(server.addr(), None).await.unwrap();
    s.recv().await; // sgc session
    s.send(json!({"jsonrpc": "2.0", "method": "sgc@broadcast", "params": {"message": "hi"}})).await;
    assert_eq!(s.recv().await["result"]["method"], "sgc@message");
    p.expect_silence().await;
}
