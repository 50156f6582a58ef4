//! Presence across a cluster of real node processes, on every engine.
//!
//! The roster is cluster-wide: `get@members` on any node answers the union
//! of every live node, and every notice reaches the clients of every node
//! exactly once. A node that crashes, stops or is cut off has its members
//! removed everywhere, each with one notice per channel and one
//! `member@remove`, and they never come back; a member with sessions on two
//! nodes stays until its last session is gone (`../shared/cases/
//! ghost-members.md`, `flapping-member.md`).
//!
//! Clients keep everything they receive ([`Presence`]), so "exactly once"
//! is a count over the whole history, and "the notices, applied in order,
//! give that state" is a replay ([`View`]) compared with `get@members`.
//! Where a test must know that another node has applied a change that
//! makes no visible notice, it makes one more change behind it on the same
//! node (a marker member) and waits for that: each node's changes arrive
//! everywhere in the order it made them.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::presence::{Presence, is, member};
use support::proxy::CutProxy;
use support::{Cluster, Engine, Options, SILENCE, STEP, http};

engine_tests!(
    the_roster_is_the_union_of_every_node,
    joins_and_leaves_are_announced_once_on_every_node,
    a_killed_nodes_members_are_removed_once_and_never_come_back,
    a_stopped_nodes_members_are_removed_at_once,
    a_member_that_leaves_and_comes_back_quickly_stays_in_view,
    a_member_with_two_sessions_stays_until_its_last_session_closes,
    a_cut_off_nodes_members_leave_and_only_live_ones_come_back,
    a_node_restarted_with_the_same_id_brings_back_only_new_members,
    one_id_admitted_on_two_nodes_at_once_is_listed_once_and_removed_once,
    the_presence_api_of_any_node_answers_the_cluster_wide_members,
);

/// A short failure timeout keeps the crash scenarios fast.
const FAILURE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Heartbeats go out every third of the failure timeout.
const HEARTBEAT: Duration = Duration::from_millis(334);

/// Room for a busy two-core machine running other cluster tests.
const SLACK: Duration = Duration::from_millis(700);

fn options(failure_timeout: Duration) -> Options {
    Options { failure_timeout_ms: Some(failure_timeout.as_millis() as u64), ..Options::default() }
}

// ------------------------------------------------------------- notices

/// `member@new` for `id`.
fn member_new(id: &str) -> impl Fn(&Value) -> bool + use<> {
    let id = id.to_owned();
    move |v| is(v, "member@new") && v["member"]["id"] == id.as_str()
}

/// `member@remove` for `id`.
fn member_removed(id: &str) -> impl Fn(&Value) -> bool + use<> {
    let id = id.to_owned();
    move |v| is(v, "member@remove") && v["member"]["id"] == id.as_str()
}

/// `channel@member@new` for `id` in `channel`.
fn joined(id: &str, channel: &str) -> impl Fn(&Value) -> bool + use<> {
    let (id, channel) = (id.to_owned(), channel.to_owned());
    move |v| {
        is(v, "channel@member@new")
            && v["member"]["id"] == id.as_str()
            && v["channel"]["name"] == channel.as_str()
    }
}

/// `channel@member@remove` for `id` in `channel`.
fn left(id: &str, channel: &str) -> impl Fn(&Value) -> bool + use<> {
    let (id, channel) = (id.to_owned(), channel.to_owned());
    move |v| {
        is(v, "channel@member@remove")
            && v["member"]["id"] == id.as_str()
            && v["channel"]["name"] == channel.as_str()
    }
}

/// Any roster notice about `id`.
fn about(id: &str) -> impl Fn(&Value) -> bool + use<> {
    let id = id.to_owned();
    move |v| {
        ["member@new", "member@remove", "channel@member@new", "channel@member@remove"]
            .iter()
            .any(|m| is(v, m))
            && v["member"]["id"] == id.as_str()
    }
}

/// The exact notice every client gets for `id` (registered with
/// [`member`]) in `channel`, or without a channel.
fn notice(method: &str, id: &str, channel: Option<&str>) -> Value {
    let mut v = json!({
        "jsonrpc": "2.0",
        "method": format!("sgc@presence@{method}"),
        "member": member(id),
    });
    if let Some(c) = channel {
        v["channel"] = json!({"name": c});
    }
    v
}

/// Waits until `c` has heard `id` leave `channel` and the roster, at most
/// until `deadline`; returns when the later of the two was read.
async fn removal(c: &mut Presence, id: &str, channel: &str, deadline: Instant) -> Instant {
    let what = format!("{id} leaving {channel}");
    let left_at = c.wait_count(&what, deadline, 1, left(id, channel)).await;
    let what = format!("member@remove of {id}");
    let removed_at = c.wait_count(&what, deadline, 1, member_removed(id)).await;
    left_at.max(removed_at)
}

/// Waits until `get@members` of `channel` lists exactly `ids` for each of
/// `clients`. (Polled: a client that joined after another does not hear of
/// it, so there is no notice every client is sure to get.)
async fn await_roster(clients: &mut [&mut Presence], ids: &[&str], channel: &str) {
    let want = sorted(ids);
    let deadline = Instant::now() + STEP;
    for c in clients.iter_mut() {
        loop {
            let listed = c.channel_ids(channel).await;
            if listed == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {channel} lists {listed:?}, not {want:?}, after {STEP:?}",
                c.label()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// The roster as one client reconstructs it: the members and the members
/// of one channel, from a starting point ([`View::seed`]) plus the notices
/// it received since, applied in order. A notice that does not fit the
/// state before it (a member added twice, removed while unknown, or
/// removed while still in the channel) fails the test.
#[derive(Debug, Default)]
struct View {
    members: BTreeSet<String>,
    channel: String,
    in_channel: BTreeSet<String>,
    mark: usize,
}

impl View {
    /// Asks `c`'s node for the members and the members of `channel`; the
    /// notices read after that answer are applied on top.
    async fn seed(c: &mut Presence, channel: &str) -> Self {
        let members = c.members(None).await.expect("member list").into_iter().collect();
        let in_channel = c.channel_ids(channel).await.into_iter().collect();
        Self { members, channel: channel.to_owned(), in_channel, mark: c.mark() }
    }

    /// The state after every notice `c` received since the seed.
    fn replay(&self, c: &Presence) -> Self {
        let mut v = Self {
            members: self.members.clone(),
            channel: self.channel.clone(),
            in_channel: self.in_channel.clone(),
            mark: self.mark,
        };
        for msg in c.since(self.mark) {
            if let Err(e) = v.apply(msg) {
                panic!("{}: notice out of place: {e}\nreceived:\n{}", c.label(), c.dump());
            }
        }
        v
    }

    fn apply(&mut self, msg: &Value) -> Result<(), String> {
        let id = msg["member"]["id"].as_str().unwrap_or_default().to_owned();
        let here = msg["channel"]["name"] == self.channel.as_str();
        let ok = if is(msg, "member@new") {
            self.members.insert(id.clone())
        } else if is(msg, "member@remove") {
            !self.in_channel.contains(&id) && self.members.remove(&id)
        } else if is(msg, "channel@member@new") && here {
            self.members.contains(&id) && self.in_channel.insert(id.clone())
        } else if is(msg, "channel@member@remove") && here {
            self.in_channel.remove(&id)
        } else {
            true
        };
        if ok { Ok(()) } else { Err(format!("{msg} on {self:?}")) }
    }

    fn ids(&self) -> Vec<String> {
        self.in_channel.iter().cloned().collect()
    }
}

/// Starts a cluster of `a` and `b` where everything between b and the rest
/// passes through a [`CutProxy`]: on the mesh, a dials b's link address
/// through it (b names no peer); on Redis, b reaches Redis through it.
async fn isolate_b(engine: Engine, options: Options) -> (Cluster, CutProxy) {
    match engine {
        Engine::Mesh => {
            let mut cluster = Cluster::start_with(engine, &["b"], options.clone()).await;
            let b_link = cluster.node("b").cluster_addr.expect("b's link address");
            let proxy = CutProxy::start(b_link).await;
            let mut spec = cluster.spec("a", options);
            spec.flags = vec!["--peer".into(), proxy.addr().to_string()];
            cluster.add(spec).await;
            cluster.wait_converged().await;
            (cluster, proxy)
        }
        Engine::Redis => {
            let mut cluster = Cluster::start_with(engine, &["a"], options.clone()).await;
            let proxy = CutProxy::start(cluster.redis_addr().expect("a private redis")).await;
            let mut spec = cluster.spec("b", options);
            let url = spec.flags.iter().position(|f| f == "--redis-url").expect("--redis-url");
            spec.flags[url + 1] = format!("redis://{}/", proxy.addr());
            cluster.add(spec).await;
            cluster.wait_converged().await;
            (cluster, proxy)
        }
    }
}

/// Registers a fresh member on `node` and waits until `observer` has
/// heard of it: every change `node` made before is then applied where
/// `observer` is.
async fn barrier(cluster: &Cluster, node: &str, id: &str, observer: &mut Presence) -> Presence {
    let mut marker = cluster.node(node).presence(id).await;
    marker.must_register(id).await;
    observer.wait_count(&format!("marker {id}"), Instant::now() + STEP, 1, member_new(id)).await;
    marker
}

/// U1 on a, U2 on b, U3 on c, each in `chat`, once every node lists all
/// three.
async fn three_in_chat(cluster: &Cluster) -> (Presence, Presence, Presence) {
    let mut u1 = cluster.node("a").presence("u1").await;
    let mut u2 = cluster.node("b").presence("u2").await;
    let mut u3 = cluster.node("c").presence("u3").await;
    u1.enter("u1", "chat").await;
    u2.enter("u2", "chat").await;
    u3.enter("u3", "chat").await;
    await_roster(&mut [&mut u1, &mut u2, &mut u3], &["u1", "u2", "u3"], "chat").await;
    (u1, u2, u3)
}

// --------------------------------------------------------------- tests

async fn the_roster_is_the_union_of_every_node(engine: Engine) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let (mut u1, mut u2, mut u3) = three_in_chat(&cluster).await;

    let all = sorted(&["u1", "u2", "u3"]);
    for u in [&mut u1, &mut u2, &mut u3] {
        assert_eq!(u.channel_ids("chat").await, all, "{}: members of chat", u.label());
        let mut everyone = u.members(None).await.expect("every member");
        everyone.sort();
        assert_eq!(everyone, all, "{}: every member", u.label());
    }
    // A client that is not a member may ask too.
    let mut guest = cluster.node("c").presence("guest").await;
    assert_eq!(guest.channel_ids("chat").await, all, "guest on c: members of chat");
}

async fn joins_and_leaves_are_announced_once_on_every_node(engine: Engine) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let mut u1 = cluster.node("a").presence("u1").await;
    let mut u3 = cluster.node("c").presence("u3").await;
    let mut lobby = cluster.node("c").presence("lobby").await;
    u1.enter("u1", "chat").await;
    u3.enter("u3", "chat").await;
    lobby.must_register("lobby").await;
    await_roster(&mut [&mut u1, &mut u3], &["u1", "u3"], "chat").await;
    u1.wait_for("lobby's member@new", STEP, member_new("lobby")).await;

    let mut u2 = cluster.node("b").presence("u2").await;
    let steps = [
        ("member@new", None),
        ("channel@member@new", Some("chat")),
        ("channel@member@remove", Some("chat")),
        ("member@remove", None),
    ];
    for (method, channel) in steps {
        let answer = match method {
            "member@new" => u2.register("u2").await,
            "channel@member@new" => u2.join("u2", "chat").await,
            "channel@member@remove" => u2.leave("u2", "chat").await,
            _ => u2.unregister("u2").await,
        };
        let expected = notice(method, "u2", channel);
        assert_eq!(answer, Ok(expected.clone()), "u2's own answer to {method}");
        // Channel notices reach the channel; member notices every member.
        let hearers: Vec<&mut Presence> = match channel {
            Some(_) => vec![&mut u1, &mut u3],
            None => vec![&mut u1, &mut u3, &mut lobby],
        };
        for h in hearers {
            h.wait_for(&format!("u2's {method}"), STEP, |v| *v == expected).await;
        }
    }

    let quiet = Instant::now() + SILENCE;
    tokio::join!(u1.drain_until(quiet), u3.drain_until(quiet), lobby.drain_until(quiet));
    let all: Vec<Value> = steps.iter().map(|(m, c)| notice(m, "u2", *c)).collect();
    for h in [&u1, &u3] {
        let heard: Vec<Value> = h.history().filter(|v| about("u2")(v)).cloned().collect();
        assert_eq!(heard, all, "{}: every notice about u2, once each, in order", h.label());
    }
    let heard: Vec<Value> = lobby.history().filter(|v| about("u2")(v)).cloned().collect();
    assert_eq!(heard, [all[0].clone(), all[3].clone()], "lobby (not in chat): member notices only");
}

async fn a_killed_nodes_members_are_removed_once_and_never_come_back(engine: Engine) {
    let mut cluster = Cluster::start_with(engine, &["a", "b", "c"], options(FAILURE_TIMEOUT)).await;
    let (mut u1, u2, mut u3) = three_in_chat(&cluster).await;
    let all = sorted(&["u1", "u2", "u3"]);
    let mut views = Vec::new();
    for u in [&mut u1, &mut u3] {
        assert_eq!(u.channel_ids("chat").await, all, "{}: members of chat", u.label());
        views.push(View::seed(u, "chat").await);
    }

    let killed = Instant::now();
    cluster.node_mut("b").kill().await;
    drop(u2);
    let deadline = killed + FAILURE_TIMEOUT + HEARTBEAT + SLACK;
    let (t1, t3) = tokio::join!(
        removal(&mut u1, "u2", "chat", deadline),
        removal(&mut u3, "u2", "chat", deadline)
    );
    let last = t1.max(t3).duration_since(killed);
    eprintln!("[{engine:?}] kill -9 of b -> last remove notice on a and c after {last:?}");

    let survivors = sorted(&["u1", "u3"]);
    for u in [&mut u1, &mut u3] {
        assert_eq!(u.channel_ids("chat").await, survivors, "{}: members of chat", u.label());
    }
    // The case asks again after the failure timeout plus 2 s: nothing about
    // u2 may arrive meanwhile, and the lists must not have changed.
    let later = killed + FAILURE_TIMEOUT + Duration::from_secs(2);
    tokio::join!(u1.drain_until(later), u3.drain_until(later));
    for (u, view) in [&mut u1, &mut u3].into_iter().zip(&views) {
        assert_eq!(u.count_since(view.mark, left("u2", "chat")), 1, "{}: {}", u.label(), u.dump());
        assert_eq!(
            u.count_since(view.mark, member_removed("u2")),
            1,
            "{}: {}",
            u.label(),
            u.dump()
        );
        assert_eq!(u.count_since(view.mark, about("u2")), 2, "{}: {}", u.label(), u.dump());
        assert_eq!(u.channel_ids("chat").await, survivors, "{}: members of chat", u.label());
        assert_eq!(view.replay(u).ids(), survivors, "{}: replayed notices", u.label());
    }

    let mut u4 = cluster.node("c").presence("u4").await;
    u4.enter("u4", "chat").await;
    assert_eq!(u4.channel_ids("chat").await, sorted(&["u1", "u3", "u4"]), "u4's first list");
}

async fn a_stopped_nodes_members_are_removed_at_once(engine: Engine) {
    // A long failure timeout: only the node's leave can explain a fast removal.
    let failure_timeout = Duration::from_secs(10);
    let mut cluster = Cluster::start_with(engine, &["a", "b", "c"], options(failure_timeout)).await;
    let (mut u1, mut u2, mut u3) = three_in_chat(&cluster).await;
    let mut views = Vec::new();
    for u in [&mut u1, &mut u3] {
        views.push(View::seed(u, "chat").await);
    }

    let stopping = Instant::now();
    let deadline = stopping + Duration::from_secs(2);
    let b = cluster.node_mut("b");
    let (status, code, t1, t3) = tokio::join!(
        b.terminate(failure_timeout),
        u2.wait_closed(STEP),
        removal(&mut u1, "u2", "chat", deadline),
        removal(&mut u3, "u2", "chat", deadline),
    );
    assert_eq!(code, 1001, "close code of u2's connection");
    assert_eq!(status.code(), Some(0), "b's exit status: {status}");
    let last = t1.max(t3).duration_since(stopping);
    eprintln!("[{engine:?}] SIGTERM of b -> last remove notice on a and c after {last:?}");

    let quiet = Instant::now() + SILENCE;
    tokio::join!(u1.drain_until(quiet), u3.drain_until(quiet));
    let survivors = sorted(&["u1", "u3"]);
    for (u, view) in [&mut u1, &mut u3].into_iter().zip(&views) {
        assert_eq!(u.count_since(view.mark, about("u2")), 2, "{}: {}", u.label(), u.dump());
        assert_eq!(u.channel_ids("chat").await, survivors, "{}: members of chat", u.label());
        assert_eq!(view.replay(u).ids(), survivors, "{}: replayed notices", u.label());
    }
}

async fn a_member_that_leaves_and_comes_back_quickly_stays_in_view(engine: Engine) {
    const CYCLES: usize = 50;
    let cluster = Cluster::start(engine, &["a", "b"]).await;
    let mut o = cluster.node("a").presence("o").await;
    let mut ob = cluster.node("b").presence("ob").await;
    o.enter("o", "room").await;
    ob.enter("ob", "room").await;
    await_roster(&mut [&mut o, &mut ob], &["o", "ob"], "room").await;
    let view_o = View::seed(&mut o, "room").await;
    let view_ob = View::seed(&mut ob, "room").await;

    let mut m = cluster.node("b").presence("m#0").await;
    m.enter("m", "room").await;
    let mut gaps = Vec::new();
    for cycle in 1..=CYCLES {
        let closing = Instant::now();
        m.close().await;
        m = cluster.node("b").presence(&format!("m#{cycle}")).await;
        m.enter("m", "room").await;
        gaps.push(closing.elapsed());

        let deadline = Instant::now() + STEP;
        for (obs, view) in [(&mut o, &view_o), (&mut ob, &view_ob)] {
            let what = format!("m joining room for the {}th time", cycle + 1);
            obs.wait_count(&what, deadline, cycle + 1, joined("m", "room")).await;
            let listed = obs.channel_ids("room").await;
            assert!(
                listed.contains(&"m".to_owned()),
                "{} after cycle {cycle}: {listed:?}",
                obs.label()
            );
            let replayed = view.replay(obs).ids();
            assert_eq!(replayed, listed, "{}: replayed notices after cycle {cycle}", obs.label());
        }
    }
    gaps.sort();
    let (median, max) = (gaps[CYCLES / 2], gaps[CYCLES - 1]);
    eprintln!(
        "[{engine:?}] close -> same id registered and joined again: median {median:?}, max {max:?}"
    );
    assert!(median < Duration::from_millis(100), "the case wants rejoins within 100 ms");

    let quiet = Instant::now() + SILENCE;
    tokio::join!(o.drain_until(quiet), ob.drain_until(quiet));
    for obs in [&o, &ob] {
        assert_eq!(obs.count(member_new("m")), CYCLES + 1, "{}", obs.label());
        assert_eq!(obs.count(member_removed("m")), CYCLES, "{}", obs.label());
        assert_eq!(obs.count(left("m", "room")), CYCLES, "{}", obs.label());
    }
}

async fn a_member_with_two_sessions_stays_until_its_last_session_closes(engine: Engine) {
    // Long enough that the stall below never looks like a failure.
    let (cluster, proxy) = isolate_b(engine, options(Duration::from_secs(3))).await;
    let mut o = cluster.node("a").presence("o").await;
    let mut ob = cluster.node("b").presence("ob").await;
    o.enter("o", "room").await;
    ob.enter("ob", "room").await;
    await_roster(&mut [&mut o, &mut ob], &["o", "ob"], "room").await;
    let view_o = View::seed(&mut o, "room").await;
    let view_ob = View::seed(&mut ob, "room").await;

    // While a and b cannot hear each other, each admits m: two sessions.
    proxy.pause();
    let mut on_a = cluster.node("a").presence("m").await;
    let mut on_b = cluster.node("b").presence("m").await;
    on_a.enter("m", "room").await;
    on_b.enter("m", "room").await;
    proxy.open();
    let _mark_b = barrier(&cluster, "b", "mark-b", &mut o).await;
    let _mark_a = barrier(&cluster, "a", "mark-a", &mut ob).await;

    for obs in [&mut o, &mut ob] {
        let listed = obs.members(None).await.expect("every member");
        let times = listed.iter().filter(|id| *id == "m").count();
        assert_eq!(times, 1, "{}: m listed once in {listed:?}", obs.label());
        assert!(obs.channel_ids("room").await.contains(&"m".to_owned()), "{}", obs.label());
        assert_eq!(obs.count(member_new("m")), 1, "{}: {}", obs.label(), obs.dump());
        assert_eq!(obs.count(joined("m", "room")), 1, "{}: {}", obs.label(), obs.dump());
    }

    // One session goes: m stays, and nobody is told otherwise.
    on_b.close().await;
    let _mark_b2 = barrier(&cluster, "b", "mark-b2", &mut o).await;
    for obs in [&mut o, &mut ob] {
        assert!(obs.channel_ids("room").await.contains(&"m".to_owned()), "{}", obs.label());
        assert_eq!(obs.count(member_removed("m")), 0, "{}: {}", obs.label(), obs.dump());
        assert_eq!(obs.count(left("m", "room")), 0, "{}: {}", obs.label(), obs.dump());
    }

    // The last one goes: one removal, everywhere.
    on_a.close().await;
    let deadline = Instant::now() + STEP;
    removal(&mut o, "m", "room", deadline).await;
    removal(&mut ob, "m", "room", deadline).await;
    let quiet = Instant::now() + SILENCE;
    tokio::join!(o.drain_until(quiet), ob.drain_until(quiet));
    for (obs, view) in [(&mut o, &view_o), (&mut ob, &view_ob)] {
        assert_eq!(obs.count(member_removed("m")), 1, "{}: {}", obs.label(), obs.dump());
        assert_eq!(obs.count(left("m", "room")), 1, "{}: {}", obs.label(), obs.dump());
        let listed = obs.channel_ids("room").await;
        assert_eq!(listed, sorted(&["o", "ob"]), "{}: members of room", obs.label());
        assert_eq!(view.replay(obs).ids(), listed, "{}: replayed notices", obs.label());
    }
}

async fn a_cut_off_nodes_members_leave_and_only_live_ones_come_back(engine: Engine) {
    let (cluster, proxy) = isolate_b(engine, options(FAILURE_TIMEOUT)).await;
    let mut ua = cluster.node("a").presence("ua").await;
    let mut ub = cluster.node("b").presence("ub").await;
    let mut gone = cluster.node("b").presence("gone").await;
    ua.enter("ua", "chat").await;
    ub.enter("ub", "chat").await;
    gone.enter("gone", "chat").await;
    await_roster(&mut [&mut ua, &mut ub, &mut gone], &["ua", "ub", "gone"], "chat").await;
    let view_a = View::seed(&mut ua, "chat").await;
    let view_b = View::seed(&mut ub, "chat").await;

    proxy.cut();
    let cut = Instant::now();
    let deadline = cut + FAILURE_TIMEOUT + HEARTBEAT + SLACK;
    let (t_a, t_b) = tokio::join!(
        removal(&mut ua, "ub", "chat", deadline),
        removal(&mut ub, "ua", "chat", deadline),
    );
    removal(&mut ua, "gone", "chat", deadline).await;
    eprintln!(
        "[{engine:?}] cut -> a removed b's members after {:?}, b removed a's after {:?}",
        t_a.duration_since(cut),
        t_b.duration_since(cut)
    );

    // While cut off: one member of b goes away, one joins on a.
    gone.close().await;
    let mut fresh = cluster.node("a").presence("fresh").await;
    fresh.enter("fresh", "chat").await;
    // Nothing found a way around the proxy: no link, and on the mesh no
    // dialling of the other's real link address (gossip carries it).
    let real: Vec<String> =
        cluster.nodes().iter().filter_map(|n| n.cluster_addr).map(|a| a.to_string()).collect();
    for id in ["a", "b"] {
        let status = cluster.node(id).status().await;
        assert_eq!(status["connected_peer_count"], 0, "{id} linked while cut off: {status}");
        let peers = status["peers"].as_array().expect("peers");
        let around = peers.iter().any(|p| real.iter().any(|r| p["address"] == r.as_str()));
        assert!(!around, "{id} dials around the proxy while cut off: {status}");
    }
    assert_eq!(ua.channel_ids("chat").await, sorted(&["fresh", "ua"]), "a while cut off");
    assert_eq!(ub.channel_ids("chat").await, sorted(&["ub"]), "b while cut off");

    proxy.heal();
    let healed = Instant::now();
    cluster.wait_converged().await;
    let deadline = Instant::now() + STEP;
    let (mark_a, mark_b) = (view_a.mark, view_b.mark);
    ua.wait_count_since(mark_a, "ub back in chat", deadline, 1, joined("ub", "chat")).await;
    ub.wait_count_since(mark_b, "ua back in chat", deadline, 1, joined("ua", "chat")).await;
    ub.wait_count_since(mark_b, "fresh in chat", deadline, 1, joined("fresh", "chat")).await;
    eprintln!("[{engine:?}] heal -> members back after {:?}", healed.elapsed());

    let quiet = Instant::now() + SILENCE;
    tokio::join!(ua.drain_until(quiet), ub.drain_until(quiet));
    let live = sorted(&["fresh", "ua", "ub"]);
    for (u, view) in [(&mut ua, &view_a), (&mut ub, &view_b)] {
        assert_eq!(u.channel_ids("chat").await, live, "{}: members of chat", u.label());
        assert_eq!(view.replay(u).ids(), live, "{}: replayed notices", u.label());
    }
    // Back exactly once; what disconnected meanwhile never came back.
    assert_eq!(ua.count_since(view_a.mark, member_new("ub")), 1, "{}", ua.dump());
    assert_eq!(ua.count_since(view_a.mark, joined("ub", "chat")), 1, "{}", ua.dump());
    assert_eq!(ua.count_since(view_a.mark, about("gone")), 2, "{}", ua.dump());
    assert_eq!(ub.count_since(view_b.mark, member_new("ua")), 1, "{}", ub.dump());
    assert_eq!(ub.count_since(view_b.mark, joined("ua", "chat")), 1, "{}", ub.dump());
}

async fn a_node_restarted_with_the_same_id_brings_back_only_new_members(engine: Engine) {
    let mut cluster = Cluster::start_with(engine, &["a", "b"], options(FAILURE_TIMEOUT)).await;
    let mut u1 = cluster.node("a").presence("u1").await;
    let mut u2 = cluster.node("b").presence("u2").await;
    u1.enter("u1", "chat").await;
    u2.enter("u2", "chat").await;
    await_roster(&mut [&mut u1], &["u1", "u2"], "chat").await;
    let view = View::seed(&mut u1, "chat").await;

    // Back on the same ports at once, before any timeout could notice.
    let killed = Instant::now();
    cluster.node_mut("b").kill().await;
    drop(u2);
    cluster.node_mut("b").restart().await;
    let deadline = killed + FAILURE_TIMEOUT + HEARTBEAT + SLACK;
    let removed = removal(&mut u1, "u2", "chat", deadline).await;
    eprintln!("[{engine:?}] kill -9 and restart of b -> u2 removed after {:?}", removed - killed);
    cluster.wait_converged().await;

    let mut u5 = cluster.node("b").presence("u5").await;
    u5.enter("u5", "chat").await;
    u1.wait_for("u5 joining chat", STEP, joined("u5", "chat")).await;
    let quiet = Instant::now() + SILENCE;
    u1.drain_until(quiet).await;

    let live = sorted(&["u1", "u5"]);
    assert_eq!(u1.channel_ids("chat").await, live, "members of chat on a");
    assert_eq!(u5.channel_ids("chat").await, live, "members of chat on the restarted b");
    assert_eq!(view.replay(&u1).ids(), live, "u1's replayed notices");
    assert_eq!(
        u1.count_since(view.mark, about("u2")),
        2,
        "u2 removed once, never back: {}",
        u1.dump()
    );
}

async fn one_id_admitted_on_two_nodes_at_once_is_listed_once_and_removed_once(engine: Engine) {
    const ROUNDS: usize = 12;
    let cluster = Cluster::start(engine, &["a", "b"]).await;
    let mut oa = cluster.node("a").presence("oa").await;
    let mut ob = cluster.node("b").presence("ob").await;
    oa.must_register("oa").await;
    ob.must_register("ob").await;
    oa.wait_for("ob's member@new", STEP, member_new("ob")).await;

    // Each round, one id registered on a and on b at the same moment.
    let mut rounds = Vec::new();
    for i in 0..ROUNDS {
        let id = format!("x{i}");
        let mut on_a = cluster.node("a").presence(&format!("{id}/a")).await;
        let mut on_b = cluster.node("b").presence(&format!("{id}/b")).await;
        let (ra, rb) = tokio::join!(on_a.register(&id), on_b.register(&id));
        for (r, c) in [(&ra, &on_a), (&rb, &on_b)] {
            assert!(matches!(r, Ok(_) | Err(1)), "{}: answer {r:?}", c.label());
        }
        assert!(ra.is_ok() || rb.is_ok(), "{id} refused on both nodes");
        rounds.push((id, ra.is_ok().then_some(on_a), rb.is_ok().then_some(on_b)));
    }
    let both = rounds.iter().filter(|(_, a, b)| a.is_some() && b.is_some()).count();
    eprintln!(
        "[{engine:?}] same id on two nodes at once: both accepted in {both} of {ROUNDS} rounds"
    );

    let _mark_a = barrier(&cluster, "a", "mark-a", &mut ob).await;
    let _mark_b = barrier(&cluster, "b", "mark-b", &mut oa).await;
    let check = |listed: &[String], label: &str, ids: &[String]| {
        for id in ids {
            let n = listed.iter().filter(|l| *l == id).count();
            assert_eq!(n, 1, "{label}: {id} listed {n} times in {listed:?}");
        }
    };
    let ids: Vec<String> = rounds.iter().map(|(id, _, _)| id.clone()).collect();
    for obs in [&mut oa, &mut ob] {
        let listed = obs.members(None).await.expect("every member");
        check(&listed, obs.label(), &ids);
        for id in &ids {
            assert_eq!(obs.count(member_new(id)), 1, "{}: {}", obs.label(), obs.dump());
        }
    }

    // b's sessions go first: only the ids b alone held leave.
    let mut b_only = Vec::new();
    let mut still = Vec::new();
    for (id, on_a, on_b) in &mut rounds {
        if let Some(c) = on_b.take() {
            c.close().await;
            if on_a.is_none() { b_only.push(id.clone()) } else { still.push(id.clone()) }
        }
    }
    let _mark_b2 = barrier(&cluster, "b", "mark-b2", &mut oa).await;
    for obs in [&mut oa, &mut ob] {
        let listed = obs.members(None).await.expect("every member");
        for id in &b_only {
            assert!(!listed.contains(id), "{}: {id} still listed", obs.label());
            assert_eq!(obs.count(member_removed(id)), 1, "{}: {}", obs.label(), obs.dump());
        }
        check(&listed, obs.label(), &still);
        for id in &still {
            assert_eq!(obs.count(member_removed(id)), 0, "{}: {}", obs.label(), obs.dump());
        }
    }

    // Then a's: every id has left, each with one member@remove.
    for (_, on_a, _) in &mut rounds {
        if let Some(c) = on_a.take() {
            c.close().await;
        }
    }
    let _mark_a2 = barrier(&cluster, "a", "mark-a2", &mut ob).await;
    let quiet = Instant::now() + SILENCE;
    tokio::join!(oa.drain_until(quiet), ob.drain_until(quiet));
    for obs in [&mut oa, &mut ob] {
        let listed = obs.members(None).await.expect("every member");
        for id in &ids {
            assert!(!listed.contains(id), "{}: {id} still listed", obs.label());
            assert_eq!(obs.count(member_new(id)), 1, "{}: {}", obs.label(), obs.dump());
            assert_eq!(obs.count(member_removed(id)), 1, "{}: {}", obs.label(), obs.dump());
        }
    }
}

async fn the_presence_api_of_any_node_answers_the_cluster_wide_members(engine: Engine) {
    let api = Options { extra: vec!["--api-key".into(), "k".into()], ..Options::default() };
    let cluster = Cluster::start_with(engine, &["a", "b", "c"], api).await;
    let (mut u1, u2, mut u3) = three_in_chat(&cluster).await;

    let everyone = [member("u1"), member("u2"), member("u3")];
    for node in cluster.nodes() {
        assert_eq!(api_members(node, "chat").await, everyone, "node {}", node.id);
        for wrong in [None, Some("apikey x"), Some("k")] {
            let headers: Vec<(&str, &str)> =
                wrong.map(|k| ("Authorization", k)).into_iter().collect();
            let (code, body) =
                http::get_with(node.ws_addr, "/api/presence/chat", &headers).await.expect("answer");
            assert_eq!(code, 401, "node {} with {wrong:?}: {body}", node.id);
        }
    }

    u2.close().await;
    let deadline = Instant::now() + STEP;
    removal(&mut u1, "u2", "chat", deadline).await;
    removal(&mut u3, "u2", "chat", deadline).await;
    for node in cluster.nodes() {
        let left = [member("u1"), member("u3")];
        assert_eq!(api_members(node, "chat").await, left, "node {} after u2 left", node.id);
    }
}

/// `GET /api/presence/CHANNEL` on `node` with the right key: the members,
/// by id.
async fn api_members(node: &support::Node, channel: &str) -> Vec<Value> {
    let path = format!("/api/presence/{channel}");
    let headers = [("Authorization", "apikey k")];
    let (code, body) = http::get_with(node.ws_addr, &path, &headers).await.expect("http answer");
    assert_eq!(code, 200, "node {}: {body}", node.id);
    let v: Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(v["channel"], channel, "node {}: {body}", node.id);
    let mut list = v["members"].as_array().expect("members array").clone();
    list.sort_by_key(|m| m["id"].as_str().unwrap_or_default().to_owned());
    list
}

/// b falls silent towards a only (on the mesh its frames to a are held;
/// on Redis what it publishes is held, while it still hears a), long
/// enough for a to remove b's members; then b is heard again. b's member
/// is still connected, so a must list it again, once. (On Redis b never
/// lost a, so it has no reason to re-announce: a asks it to.)
async fn a_node_heard_again_after_one_way_silence_brings_its_members_back(engine: Engine) {
    let (cluster, proxy) = isolate_b(engine, options(FAILURE_TIMEOUT)).await;
    let mut ua = cluster.node("a").presence("ua").await;
    let mut ub = cluster.node("b").presence("ub").await;
    ua.enter("ua", "chat").await;
    ub.enter("ub", "chat").await;
    await_roster(&mut [&mut ua, &mut ub], &["ua", "ub"], "chat").await;
    let view_a = View::seed(&mut ua, "chat").await;
    let view_b = View::seed(&mut ub, "chat").await;

    match engine {
        Engine::Mesh => proxy.pause_from_target(),
        Engine::Redis => proxy.pause_to_target(),
    }
    let silent = Instant::now();
    removal(&mut ua, "ub", "chat", silent + FAILURE_TIMEOUT + HEARTBEAT + SLACK).await;
    proxy.open();
    let deadline = Instant::now() + STEP;
    ua.wait_count_since(view_a.mark, "ub back in chat", deadline, 1, joined("ub", "chat")).await;

    let quiet = Instant::now() + SILENCE;
    tokio::join!(ua.drain_until(quiet), ub.drain_until(quiet));
    let both = sorted(&["ua", "ub"]);
    for (u, view) in [(&mut ua, &view_a), (&mut ub, &view_b)] {
        assert_eq!(u.channel_ids("chat").await, both, "{}: members of chat", u.label());
        assert_eq!(view.replay(u).ids(), both, "{}: replayed notices", u.label());
    }
    assert_eq!(ua.count_since(view_a.mark, member_new("ub")), 1, "{}", ua.dump());
}

mod one_way_silence {
    use super::support::Engine;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mesh() {
        super::a_node_heard_again_after_one_way_silence_brings_its_members_back(Engine::Mesh).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        super::a_node_heard_again_after_one_way_silence_brings_its_members_back(Engine::Redis)
            .await;
    }
}
