//! The roster's rules, one scenario per test. An [`Observer`] plays a
//! client: it applies the notices it would receive, in order, and must end
//! up with the same picture as the roster.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn m(id: &str) -> Member {
    Member { id: id.into(), name: format!("{id}-name"), info: String::new() }
}

fn node(id: &str) -> Arc<str> {
    id.into()
}

fn ch(name: &str) -> Arc<str> {
    name.into()
}

fn added(conn: ConnId, id: &str) -> PresenceDelta {
    PresenceDelta::MemberAdded { conn, member: m(id) }
}

fn joined(conn: ConnId, id: &str, channel: &str) -> PresenceDelta {
    PresenceDelta::ChannelJoined { conn, id: id.into(), channel: ch(channel) }
}

fn cmr(channel: &str, id: &str) -> Notice {
    Notice::ChannelMemberRemove { channel: ch(channel), member: m(id) }
}

fn cmn(channel: &str, id: &str) -> Notice {
    Notice::ChannelMemberNew { channel: ch(channel), member: m(id) }
}

/// What a client knows after applying the notices it got, in order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Observer {
    members: BTreeSet<String>,
    channels: BTreeMap<String, BTreeSet<String>>,
}

impl Observer {
    fn of(r: &Roster) -> Self {
        let members = r.members().into_iter().map(|m| m.id).collect();
        let mut o = Self { members, ..Self::default() };
        for c in r.channels() {
            let ids = r.channel_members(&c).unwrap().into_iter().map(|m| m.id).collect();
            o.channels.insert(c.to_string(), ids);
        }
        o
    }

    fn apply(&mut self, notices: &[Notice]) {
        for n in notices {
            match n {
                Notice::MemberNew(m) => assert!(self.members.insert(m.id.clone()), "{n:?}"),
                Notice::MemberRemove(m) => assert!(self.members.remove(&m.id), "{n:?}"),
                Notice::ChannelNew(_) => {}
                Notice::ChannelMemberNew { channel, member } => {
                    let ids = self.channels.entry(channel.to_string()).or_default();
                    assert!(ids.insert(member.id.clone()), "{n:?}");
                }
                Notice::ChannelMemberRemove { channel, member } => {
                    let ids = self.channels.get_mut(channel.as_ref()).expect("known channel");
                    assert!(ids.remove(&member.id), "{n:?}");
                    if ids.is_empty() {
                        self.channels.remove(channel.as_ref());
                    }
                }
            }
        }
    }
}

/// Notices without the hook-only `ChannelNew`.
fn visible(notices: Vec<Notice>) -> Vec<Notice> {
    notices.into_iter().filter(|n| !matches!(n, Notice::ChannelNew(_))).collect()
}

// ------------------------------------------------------------------ local

#[test]
fn a_new_member_is_announced_and_listed() {
    let mut r = Roster::new();
    assert_eq!(r.add_local(1, m("u1")).unwrap(), vec![Notice::MemberNew(m("u1"))]);
    assert_eq!(r.members(), vec![m("u1")]);
    assert_eq!(r.held_by(1, "u1"), Some(&m("u1")));
    assert_eq!(r.held_by(2, "u1"), None);
}

#[test]
fn an_id_known_anywhere_is_refused_with_code_1() {
    let mut r = Roster::new();
    r.add_local(1, m("u1")).unwrap();
    assert_eq!(r.add_local(2, m("u1")), Err(RosterError::MemberExists));
    assert_eq!(r.add_local(1, m("u1")), Err(RosterError::MemberExists));

    r.apply_remote(&node("B"), &added(9, "u2"));
    let err = r.add_local(1, m("u2")).unwrap_err();
    assert_eq!((err, err.code()), (RosterError::MemberExists, 1));
}

#[test]
fn a_connection_may_register_several_members() {
    let mut r = Roster::new();
    r.add_local(1, m("a")).unwrap();
    r.add_local(1, m("b")).unwrap();
    assert_eq!(r.count_held_by(1), 2);
    assert_eq!(r.conns_of_all(), BTreeSet::from([1]));
}

#[test]
fn the_first_join_creates_the_channel_and_the_last_leave_drops_it() {
    let mut r = Roster::new();
    r.add_local(1, m("a")).unwrap();
    r.add_local(2, m("b")).unwrap();

    assert_eq!(
        r.join_local(1, "a", "room").unwrap(),
        vec![Notice::ChannelNew(ch("room")), cmn("room", "a")]
    );
    assert_eq!(r.join_local(2, "b", "room").unwrap(), vec![cmn("room", "b")]);
    assert_eq!(r.channel_members("room"), Some(vec![m("a"), m("b")]));

    assert_eq!(r.leave_local(1, "a", "room").unwrap(), vec![cmr("room", "a")]);
    assert!(r.channel_exists("room"));
    assert_eq!(r.leave_local(2, "b", "room").unwrap(), vec![cmr("room", "b")]);
    assert!(!r.channel_exists("room"));
    assert_eq!(r.channel_members("room"), None);
    assert!(r.channels().is_empty());
}

#[test]
fn channel_operations_refuse_with_their_codes() {
    let mut r = Roster::new();
    r.add_local(1, m("a")).unwrap();
    r.add_local(2, m("b")).unwrap();
    r.join_local(1, "a", "room").unwrap();

    let code = |e: Result<Vec<Notice>, RosterError>| e.unwrap_err().code();
    assert_eq!(code(r.join_local(1, "nobody", "room")), 3);
    assert_eq!(code(r.join_local(2, "a", "room")), 3, "acting as another connection's member");
    assert_eq!(code(r.join_local(1, "a", "room")), 11);
    assert_eq!(code(r.leave_local(1, "nobody", "room")), 3);
    assert_eq!(code(r.leave_local(1, "a", "nowhere")), 5);
    assert_eq!(code(r.leave_local(2, "b", "room")), 12);
    assert_eq!(code(r.remove_local(2, "a")), 3);
}

#[test]
fn removing_a_member_announces_each_channel_then_the_member() {
    let mut r = Roster::new();
    r.add_local(1, m("a")).unwrap();
    r.join_local(1, "a", "x").unwrap();
    r.join_local(1, "a", "y").unwrap();

    let notices = r.remove_local(1, "a").unwrap();
    assert_eq!(notices, vec![cmr("x", "a"), cmr("y", "a"), Notice::MemberRemove(m("a"))]);
    assert!(r.members().is_empty() && r.channels().is_empty());
    assert_eq!(r.count_held_by(1), 0);
}

#[test]
fn a_closed_connection_loses_every_member_it_registered() {
    let mut r = Roster::new();
    r.add_local(1, m("self-chosen")).unwrap();
    r.add_local(1, m("second")).unwrap();
    r.add_local(2, m("other")).unwrap();
    r.join_local(1, "self-chosen", "room").unwrap();
    r.join_local(2, "other", "room").unwrap();

    let notices = r.close_local(1);
    assert_eq!(
        notices,
        vec![
            Notice::MemberRemove(m("second")),
            cmr("room", "self-chosen"),
            Notice::MemberRemove(m("self-chosen")),
        ]
    );
    assert_eq!(r.members(), vec![m("other")]);
    assert_eq!(r.channel_members("room"), Some(vec![m("other")]));
    assert!(r.close_local(1).is_empty(), "closing twice changes nothing");
}

// ------------------------------------------------------------- recipients

#[test]
fn member_notices_go_to_every_member_connection_only() {
    let mut r = Roster::new();
    r.add_local(1, m("a")).unwrap();
    r.add_local(2, m("b")).unwrap();
    r.apply_remote(&node("B"), &added(1, "remote"));
    // Connection 3 is connected but registered no member: not a member.
    assert_eq!(r.recipients(&Notice::MemberNew(m("c"))), BTreeSet::from([1, 2]));
    assert_eq!(r.recipients(&Notice::ChannelNew(ch("x"))), BTreeSet::new());
}

#[test]
fn channel_notices_go_to_the_channel_and_to_the_member_itself() {
    let mut r = Roster::new();
    for (conn, id) in [(1, "a"), (2, "b"), (3, "c")] {
        r.add_local(conn, m(id)).unwrap();
    }
    r.join_local(1, "a", "room").unwrap();
    r.join_local(2, "b", "room").unwrap();

    assert_eq!(r.recipients(&cmn("room", "b")), BTreeSet::from([1, 2]));
    // c is not in room, but its own connection hears of c's channel changes.
    assert_eq!(r.recipients(&cmr("room", "c")), BTreeSet::from([1, 2, 3]));
    assert_eq!(r.recipients(&Notice::MemberRemove(m("c"))), BTreeSet::from([1, 2, 3]));
}

// ------------------------------------------------------------------ remote

#[test]
fn remote_deltas_are_applied_and_announced() {
    let mut r = Roster::new();
    let b = node("B");
    assert_eq!(r.apply_remote(&b, &added(7, "u2")), vec![Notice::MemberNew(m("u2"))]);
    assert_eq!(visible(r.apply_remote(&b, &joined(7, "u2", "chat"))), vec![cmn("chat", "u2")]);
    let left = PresenceDelta::ChannelLeft { conn: 7, id: "u2".into(), channel: ch("chat") };
    assert_eq!(r.apply_remote(&b, &left), vec![cmr("chat", "u2")]);
    let removed = PresenceDelta::MemberRemoved { conn: 7, id: "u2".into() };
    assert_eq!(r.apply_remote(&b, &removed), vec![Notice::MemberRemove(m("u2"))]);
    assert!(r.members().is_empty());
}

#[test]
fn replayed_and_stray_deltas_change_nothing() {
    let mut r = Roster::new();
    let b = node("B");
    r.apply_remote(&b, &added(7, "u2"));
    r.apply_remote(&b, &joined(7, "u2", "chat"));
    let before = Observer::of(&r);

    assert!(r.apply_remote(&b, &added(7, "u2")).is_empty());
    assert!(r.apply_remote(&b, &joined(7, "u2", "chat")).is_empty());
    assert!(r.apply_remote(&b, &joined(8, "ghost", "chat")).is_empty(), "unknown holder");
    let removed = PresenceDelta::MemberRemoved { conn: 8, id: "u2".into() };
    assert!(r.apply_remote(&b, &removed).is_empty(), "another holder of the id");
    assert!(r.apply_remote(&b, &PresenceDelta::ConnectionClosed { conn: 99 }).is_empty());
    assert_eq!(Observer::of(&r), before);
}

#[test]
fn a_crashed_node_leaves_no_ghost_members() {
    // U1 on A (this node), U2 on B, U3 on C, all in chat.
    let (b, c) = (node("B"), node("C"));
    let mut r = Roster::new();
    r.add_local(1, m("U1")).unwrap();
    r.join_local(1, "U1", "chat").unwrap();
    r.apply_remote(&b, &added(1, "U2"));
    r.apply_remote(&b, &joined(1, "U2", "chat"));
    r.apply_remote(&c, &added(1, "U3"));
    r.apply_remote(&c, &joined(1, "U3", "chat"));
    let mut u1 = Observer::of(&r);

    let notices = r.remove_node(&b);
    assert_eq!(notices, vec![cmr("chat", "U2"), Notice::MemberRemove(m("U2"))]);
    for n in &notices {
        assert_eq!(r.recipients(n), BTreeSet::from([1]), "U1 hears of {n:?}");
    }
    u1.apply(&notices);
    assert_eq!(u1, Observer::of(&r));
    assert_eq!(r.channel_members("chat"), Some(vec![m("U1"), m("U3")]));

    // U4 joins on C afterwards: its first list has no U2.
    r.apply_remote(&c, &added(2, "U4"));
    r.apply_remote(&c, &joined(2, "U4", "chat"));
    let ids: Vec<String> = r.channel_members("chat").unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["U1", "U3", "U4"]);
    assert!(r.remove_node(&b).is_empty(), "removing again announces nothing");
}

#[test]
fn a_node_that_comes_back_brings_back_only_its_live_members() {
    let b = node("B");
    let mut r = Roster::new();
    r.apply_remote(&b, &added(1, "old"));
    r.apply_remote(&b, &joined(1, "old", "chat"));
    r.remove_node(&b);

    // Same id, new process: its snapshot is the truth.
    let snapshot = PresenceSnapshot {
        holdings: vec![Holding { conn: 1, member: m("fresh"), channels: vec![ch("chat")] }],
    };
    let notices = visible(r.replace_node(&b, &snapshot));
    assert_eq!(notices, vec![Notice::MemberNew(m("fresh")), cmn("chat", "fresh")]);
    assert_eq!(r.members(), vec![m("fresh")]);
}

#[test]
fn a_restart_missed_by_the_failure_detector_is_fixed_by_the_snapshot() {
    let b = node("B");
    let mut r = Roster::new();
    r.apply_remote(&b, &added(1, "gone"));
    r.apply_remote(&b, &added(2, "kept"));
    r.apply_remote(&b, &joined(1, "gone", "chat"));
    let snapshot = PresenceSnapshot {
        holdings: vec![Holding { conn: 2, member: m("kept"), channels: vec![] }],
    };
    assert_eq!(
        r.replace_node(&b, &snapshot),
        vec![cmr("chat", "gone"), Notice::MemberRemove(m("gone"))]
    );
}

#[test]
fn replacing_a_node_with_what_we_had_announces_nothing() {
    let b = node("B");
    let mut r = Roster::new();
    r.apply_remote(&b, &added(1, "x"));
    r.apply_remote(&b, &joined(1, "x", "c1"));
    r.apply_remote(&b, &added(2, "y"));
    let snapshot = PresenceSnapshot {
        holdings: vec![
            Holding { conn: 2, member: m("y"), channels: vec![] },
            Holding { conn: 1, member: m("x"), channels: vec![ch("c1")] },
        ],
    };
    assert!(r.replace_node(&b, &snapshot).is_empty());
}

#[test]
fn replacing_a_node_announces_only_the_real_changes() {
    let b = node("B");
    let mut r = Roster::new();
    r.apply_remote(&b, &added(1, "x"));
    r.apply_remote(&b, &joined(1, "x", "c1"));
    r.apply_remote(&b, &joined(1, "x", "c2"));
    r.apply_remote(&b, &added(2, "y"));
    let mut o = Observer::of(&r);

    // x left c1 and joined c3; y is gone; z arrived. Missed deltas, say.
    let snapshot = PresenceSnapshot {
        holdings: vec![
            Holding { conn: 1, member: m("x"), channels: vec![ch("c2"), ch("c3")] },
            Holding { conn: 3, member: m("z"), channels: vec![] },
        ],
    };
    let notices = visible(r.replace_node(&b, &snapshot));
    assert_eq!(
        notices,
        vec![
            cmr("c1", "x"),
            cmn("c3", "x"),
            Notice::MemberRemove(m("y")),
            Notice::MemberNew(m("z"))
        ]
    );
    o.apply(&notices);
    assert_eq!(o, Observer::of(&r));
}

#[test]
fn a_local_snapshot_rebuilds_the_same_roster_on_a_peer() {
    let mut a = Roster::new();
    a.add_local(1, m("a1")).unwrap();
    a.add_local(1, m("a2")).unwrap();
    a.add_local(2, m("a3")).unwrap();
    a.join_local(1, "a1", "x").unwrap();
    a.join_local(2, "a3", "x").unwrap();
    a.join_local(2, "a3", "y").unwrap();
    a.apply_remote(&node("C"), &added(1, "not-ours"));

    let snapshot = a.snapshot_local();
    assert_eq!(snapshot.holdings.len(), 3, "only what this node owns");
    let json = serde_json::to_string(&snapshot).unwrap();
    assert_eq!(serde_json::from_str::<PresenceSnapshot>(&json).unwrap(), snapshot);

    let mut peer = Roster::new();
    peer.replace_node(&node("A"), &snapshot);
    assert_eq!(peer.members(), vec![m("a1"), m("a2"), m("a3")]);
    assert_eq!(peer.channel_members("x"), Some(vec![m("a1"), m("a3")]));
    assert_eq!(peer.channel_members("y"), Some(vec![m("a3")]));
}

#[test]
fn deltas_have_a_stable_tagged_json_form() {
    let d = joined(4, "u", "room");
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"op": "channel_joined", "conn": 4, "id": "u", "channel": "room"})
    );
    assert_eq!(serde_json::from_value::<PresenceDelta>(json).unwrap(), d);
}

// ------------------------------------------------- flapping and sessions

#[test]
fn a_member_flapping_on_another_node_stays_consistent_for_50_cycles() {
    // O on A (this node) in room; M on B closes and a new connection of B
    // registers the same id and joins room, 50 times.
    let b = node("B");
    let mut r = Roster::new();
    r.add_local(1, m("O")).unwrap();
    r.join_local(1, "O", "room").unwrap();
    r.apply_remote(&b, &added(100, "M"));
    r.apply_remote(&b, &joined(100, "M", "room"));
    let mut o = Observer::of(&r);

    for cycle in 0..50 {
        let (old, new) = (100 + cycle, 101 + cycle);
        let mut heard = Vec::new();
        for delta in [
            PresenceDelta::ConnectionClosed { conn: old },
            added(new, "M"),
            joined(new, "M", "room"),
        ] {
            let notices = r.apply_remote(&b, &delta);
            heard.extend(notices.into_iter().filter(|n| r.recipients(n).contains(&1)));
        }
        o.apply(&heard);
        assert_eq!(o, Observer::of(&r), "cycle {cycle}");
        assert!(o.channels["room"].contains("M"), "cycle {cycle}: M is in room");
    }
}

#[test]
fn a_member_flapping_on_this_node_stays_consistent_for_50_cycles() {
    let mut r = Roster::new();
    r.add_local(1, m("O")).unwrap();
    r.join_local(1, "O", "room").unwrap();
    r.add_local(100, m("M")).unwrap();
    r.join_local(100, "M", "room").unwrap();
    let mut o = Observer::of(&r);

    for cycle in 0..50 {
        let (old, new) = (100 + cycle, 101 + cycle);
        let mut heard = r.close_local(old);
        heard.extend(r.add_local(new, m("M")).expect("the id is free again"));
        heard.extend(r.join_local(new, "M", "room").unwrap());
        o.apply(&heard);
        assert_eq!(o, Observer::of(&r), "cycle {cycle}");
        assert!(o.channels["room"].contains("M"));
    }
}

#[test]
fn a_member_with_two_sessions_leaves_only_with_its_last() {
    // Both nodes admitted M before hearing of each other.
    let b = node("B");
    let mut r = Roster::new();
    r.add_local(1, m("O")).unwrap();
    r.join_local(1, "O", "room").unwrap();
    r.add_local(2, m("M")).unwrap();
    r.join_local(2, "M", "room").unwrap();
    assert!(r.apply_remote(&b, &added(9, "M")).is_empty(), "already listed");
    assert!(r.apply_remote(&b, &joined(9, "M", "room")).is_empty(), "already in room");

    assert!(r.close_local(2).is_empty(), "one session closed: nothing to announce");
    assert_eq!(r.members(), vec![m("M"), m("O")]);
    assert_eq!(r.channel_members("room"), Some(vec![m("M"), m("O")]));

    assert_eq!(
        r.apply_remote(&b, &PresenceDelta::ConnectionClosed { conn: 9 }),
        vec![cmr("room", "M"), Notice::MemberRemove(m("M"))]
    );
}

#[test]
fn channel_membership_is_the_union_over_sessions() {
    let b = node("B");
    let mut r = Roster::new();
    r.add_local(2, m("M")).unwrap();
    r.apply_remote(&b, &added(9, "M"));
    r.apply_remote(&b, &joined(9, "M", "room"));
    assert_eq!(r.channel_members("room"), Some(vec![m("M")]));
    // This node's session never joined room: leaving it is refused...
    assert_eq!(r.leave_local(2, "M", "room"), Err(RosterError::NotInChannel));
    // ...and its own join adds nothing visible.
    assert!(r.join_local(2, "M", "room").unwrap().is_empty());
    // The remote session leaves: M is still in room through this one.
    let left = PresenceDelta::ChannelLeft { conn: 9, id: "M".into(), channel: ch("room") };
    assert!(r.apply_remote(&b, &left).is_empty());
    assert_eq!(r.leave_local(2, "M", "room").unwrap(), vec![cmr("room", "M")]);
}

#[test]
fn concurrent_admission_on_two_nodes_lists_once_and_removes_once() {
    let (b, c) = (node("B"), node("C"));
    let mut r = Roster::new();
    assert_eq!(r.apply_remote(&b, &added(1, "M")), vec![Notice::MemberNew(m("M"))]);
    assert!(r.apply_remote(&c, &added(1, "M")).is_empty());
    assert_eq!(r.members(), vec![m("M")]);
    assert_eq!(r.add_local(5, m("M")), Err(RosterError::MemberExists));

    assert!(r.remove_node(&b).is_empty(), "still held on C");
    assert_eq!(r.remove_node(&c), vec![Notice::MemberRemove(m("M"))]);
    assert!(r.members().is_empty());
}

#[test]
fn the_oldest_session_gives_the_member_its_name_and_info() {
    let b = node("B");
    let mut r = Roster::new();
    r.add_local(1, m("M")).unwrap();
    let other = Member { id: "M".into(), name: "from B".into(), info: "i".into() };
    r.apply_remote(&b, &PresenceDelta::MemberAdded { conn: 3, member: other.clone() });
    assert_eq!(r.member("M"), Some(&m("M")));

    assert!(r.close_local(1).is_empty());
    assert_eq!(r.member("M"), Some(&other));
    assert_eq!(
        r.apply_remote(&b, &PresenceDelta::ConnectionClosed { conn: 3 }),
        vec![Notice::MemberRemove(other)]
    );
}
