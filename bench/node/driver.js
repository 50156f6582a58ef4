// The Node.js client driver: Socket.IO clients that subscribe, publish at
// a paced rate and record delivery latency, commanded by the Rust harness
// one JSON line at a time on stdin, answering one JSON line on stdout.
//
// Commands:
//   {"cmd":"setup","config":{"subs":[{"url","channel"}],"pubs":[{"url","channels"}],"size","client"}}
//       -> {"ready":true}
//   {"cmd":"step","step":N,"rate":R,"secs":S}  -> {"sent","lag_ms","secs"}
//   {"cmd":"count"}    -> {"received"}
//   {"cmd":"collect"}  -> {"received","late","closed","hist":[[us,count],...]}
//   {"cmd":"exit"}
//
// Messages carry "STEP:SEQ:T:" then padding, T being process.hrtime in ns
// (CLOCK_MONOTONIC, the clock the Rust harness uses too).
//
// Two clients (config.client):
//   "lean" (default): the Socket.IO wire protocol (Engine.IO 4 over a plain
//     `ws` WebSocket) spoken directly, with events read by string search and
//     no JSON parse, as the Rust load generator reads wscluster's events: the
//     driver must cost less than the server it measures, on the same cores.
//   "socket.io-client": the official client library, as applications use it.
"use strict";

const readline = require("readline");
const WebSocket = require("ws");
const { io } = require("socket.io-client");

let subs = [];
let pubs = [];
let size = 64;
let client = "lean";
let step = 0;
let received = 0;
let late = 0;
let closed = 0;
let hist = new Map();

const now = () => process.hrtime.bigint();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function record(message) {
  if (typeof message !== "string") return;
  const a = message.indexOf(":");
  const b = message.indexOf(":", a + 1);
  const c = message.indexOf(":", b + 1);
  stamped(Number(message.slice(0, a)), message.slice(b + 1, c));
}

// `t` is the send time in ns, as decimal text.
function stamped(s, t) {
  if (s !== step) {
    late++;
    return;
  }
  received++;
  let us = Number((now() - BigInt(t)) / 1000n);
  if (us < 1) us = 1;
  // Three significant digits, like the harness's HDR histogram.
  const key = us < 1000 ? us : Number(us.toPrecision(3));
  hist.set(key, (hist.get(key) || 0) + 1);
}

// --- socket.io-client -------------------------------------------------

function connectLibrary(url) {
  return new Promise((resolve, reject) => {
    // forceNew: one connection per client (no multiplexing on one Manager).
    const s = io(url, { transports: ["websocket"], reconnection: false, forceNew: true });
    const timer = setTimeout(() => reject(new Error(`connect ${url}: timeout`)), 30000);
    s.once("connect", () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once("connect_error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function subscribeLibrary(url, channel) {
  const s = await connectLibrary(url);
  s.on("event", (_channel, message) => record(message));
  s.on("disconnect", () => closed++);
  await s.timeout(30000).emitWithAck("subscribe", channel);
  return { close: () => s.close() };
}

async function publisherLibrary(url) {
  const s = await connectLibrary(url);
  return { emit: (ch, msg) => s.emit("publish", ch, msg), close: () => s.close() };
}

// --- lean: Engine.IO 4 / Socket.IO 5 packets over ws ------------------
// "0{..}" open, "40" connect, "2"/"3" ping/pong, "42[...]" event,
// "42N[...]" event with ack id N, "43N[...]" ack.

const COMMA_QUOTE = Buffer.from(',"');

function connectLean(url, onEvent) {
  const wsUrl = url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    const timer = setTimeout(() => reject(new Error(`connect ${url}: timeout`)), 30000);
    let acks = null;
    ws.on("message", (data) => {
      // data is a Buffer; packet type in the first bytes.
      if (data[0] === 0x34 && data[1] === 0x32) {
        onEvent(data);
      } else if (data[0] === 0x32 && data.length === 1) {
        ws.send("3");
      } else if (data[0] === 0x30) {
        ws.send("40");
      } else if (data[0] === 0x34 && data[1] === 0x30) {
        clearTimeout(timer);
        resolve({ ws, onAck: (f) => (acks = f) });
      } else if (data[0] === 0x34 && data[1] === 0x33 && acks) {
        acks();
      }
    });
    ws.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    ws.on("close", () => closed++);
  });
}

// 42["event","CHANNEL","STEP:SEQ:T:xxx"]: the message is the last string.
function leanEvent(buf) {
  const at = buf.lastIndexOf(COMMA_QUOTE) + 2;
  const head = buf.toString("latin1", at, Math.min(buf.length, at + 48));
  const a = head.indexOf(":");
  const b = head.indexOf(":", a + 1);
  const c = head.indexOf(":", b + 1);
  stamped(Number(head.slice(0, a)), head.slice(b + 1, c));
}

async function subscribeLean(url, channel) {
  const { ws, onAck } = await connectLean(url, leanEvent);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no subscribe ack")), 30000);
    onAck(() => {
      clearTimeout(timer);
      resolve();
    });
    ws.send(`421${JSON.stringify(["subscribe", channel])}`);
  });
  return { close: () => ws.close() };
}

async function publisherLean(url) {
  const { ws } = await connectLean(url, () => {});
  // Channels and messages are plain ASCII without quotes: no escaping needed.
  return { emit: (ch, msg) => ws.send(`42["publish","${ch}","${msg}"]`), close: () => ws.close() };
}

async function setup(config) {
  size = config.size || 64;
  client = config.client || "lean";
  const subscribe = client === "lean" ? subscribeLean : subscribeLibrary;
  const publisher = client === "lean" ? publisherLean : publisherLibrary;
  const todo = config.subs.slice();
  const workers = Array.from({ length: 64 }, async () => {
    while (todo.length) {
      const { url, channel } = todo.shift();
      subs.push(await subscribe(url, channel));
    }
  });
  await Promise.all(workers);
  for (const p of config.pubs) {
    pubs.push({ socket: await publisher(p.url), channels: p.channels });
  }
  return { ready: true };
}

function stamp(seq) {
  const head = `${step}:${seq}:${now()}:`;
  return head + "x".repeat(Math.max(0, size - head.length));
}

async function runStep({ step: n, rate, secs }) {
  step = n;
  received = 0;
  late = 0;
  hist = new Map();
  if (!pubs.length) return { sent: 0, lag_ms: 0, secs: 0 };

  const total = Math.round(rate * secs);
  const start = now();
  const elapsed = () => Number(now() - start) / 1e9;
  let sent = 0;
  let lag = 0;
  while (sent < total) {
    const t = elapsed();
    const due = Math.min(total, Math.floor(t * rate) + 1);
    lag = Math.max(lag, (t - sent / rate) * 1e3);
    while (sent < due) {
      const p = pubs[sent % pubs.length];
      const ch = p.channels[Math.floor(Math.random() * p.channels.length)];
      p.socket.emit(ch, stamp(sent));
      sent++;
    }
    await sleep(Math.max(0, (sent / rate - elapsed()) * 1e3));
  }
  return { sent, lag_ms: lag, secs: elapsed() };
}

async function handle(cmd) {
  switch (cmd.cmd) {
    case "setup":
      return setup(cmd.config);
    case "step":
      return runStep(cmd);
    case "count":
      return { received };
    case "collect":
      return { received, late, closed, hist: Array.from(hist.entries()) };
    case "exit":
      for (const s of subs) s.close();
      for (const p of pubs) p.socket.close();
      setTimeout(() => process.exit(0), 100);
      return { bye: true };
    default:
      return { error: `unknown command ${cmd.cmd}` };
  }
}

// Commands run one after another, in the order they arrive.
let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  queue = queue.then(async () => {
    let answer;
    try {
      answer = await handle(JSON.parse(line));
    } catch (e) {
      answer = { error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  });
});
process.stdin.on("end", () => process.exit(0));
