// Interop tests: the Node `ws` client against `wscluster` (sgc protocol,
// sub-protocol `esegece.com`; spec: the project's sgc-protocol.md).
//
// Run with `node --test tests/node` (after `npm ci` in tests/node).
// The server binary comes from WSCLUSTER_BIN (relative paths are taken from
// the repository root), default target/debug/wscluster. Each suite starts
// its own server on an OS-chosen port and stops it afterwards.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.resolve(ROOT, process.env.WSCLUSTER_BIN || 'target/debug/wscluster');
const RECV_TIMEOUT = 5000;
const SILENCE = 400;
const GUID_RE = /^\{?[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}?$/;

// ---------------------------------------------------------------- server

const running = new Set();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

// The server reads its settings from WSCLUSTER_* variables: start it with defaults.
const serverEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('WSCLUSTER_')));

function startServer(extraArgs = []) {
  if (!existsSync(BIN)) {
    throw new Error(`server binary ${BIN} not found (run cargo build or set WSCLUSTER_BIN)`);
  }
  const envArgs = (process.env.INTEROP_SERVER_ARGS || '').split(/\s+/).filter(Boolean);
  const proc = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--cluster-listen', '127.0.0.1:0', ...envArgs, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: serverEnv,
  });
  running.add(proc);
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const lines = [];
    let found = false;
    const fail = (why) => {
      if (found) return;
      found = true;
      clearTimeout(timer);
      proc.kill('SIGKILL');
      reject(new Error(`${why}; stdout lines ${JSON.stringify(lines)} + ${JSON.stringify(out)}\n--- server stderr ---\n${stderr}`));
    };
    const timer = setTimeout(() => fail('no "listening" line within 15s'), 15000);
    proc.on('error', (e) => fail(`spawn failed: ${e.message}`));
    proc.on('exit', (code) => {
      running.delete(proc);
      if (!found) fail(`server exited with code ${code} before listening`);
    });
    // The contract is one stdout line, `listening HOST:PORT`, printed first;
    // earlier lines are tolerated (and reported by the stdout-contract test).
    proc.stdout.on('data', (d) => {
      out += d.toString();
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl).replace(/\r$/, '');
        out = out.slice(nl + 1);
        lines.push(line);
        if (found) continue;
        const m = /^listening (\S+):(\d+)$/.exec(line);
        if (!m) continue;
        found = true;
        clearTimeout(timer);
        const addr = `${m[1]}:${m[2]}`;
        resolve({ proc, addr, url: `ws://${addr}/`, lines, stderr: () => stderr });
      }
    });
  });
}

async function stopServer(srv) {
  if (!srv) return;
  const { proc } = srv;
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((res) => proc.once('exit', res));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

// ---------------------------------------------------------------- client

const uniq = (p) => `${p}-${randomUUID().slice(0, 12)}`;
const req = (method, params, id, extra = {}) => {
  const m = { jsonrpc: '2.0', method };
  if (params !== undefined) m.params = params;
  if (id !== undefined) m.id = id;
  return { ...m, ...extra };
};
const ack = (id) => ({ jsonrpc: '2.0', result: { method: 'sgc@acknowledgment' }, id });
const event = (channel, message) => ({ jsonrpc: '2.0', result: { method: 'sgc@event', channel, message } });

class Client {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    ws.on('message', (data, isBinary) => {
      const item = { data: isBinary ? data : data.toString('utf8'), isBinary };
      const w = this.waiters.shift();
      if (w) w.resolve(item);
      else this.queue.push(item);
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      for (const w of this.waiters.splice(0)) w.reject(new Error(`connection closed ${code} ${reason}`));
    });
    ws.on('error', () => {}); // surfaced through 'close' / timeouts
  }

  static async open(url, protocols = ['esegece.com'], { expectSession = true } = {}) {
    const ws = new WebSocket(url, protocols);
    const c = new Client(ws);
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`connect to ${url} timed out`)), RECV_TIMEOUT);
      ws.once('open', () => {
        clearTimeout(t);
        resolve();
      });
      ws.once('unexpected-response', (_req, res) => {
        clearTimeout(t);
        reject(new Error(`handshake refused: HTTP ${res.statusCode}`));
      });
      ws.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
    if (expectSession) c.session = await c.recv();
    return c;
  }

  recvRaw(timeout = RECV_TIMEOUT) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closed) return Promise.reject(new Error(`connection closed ${this.closed.code}`));
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (v) => {
          clearTimeout(t);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no message within ${timeout} ms`));
      }, timeout);
      this.waiters.push(w);
    });
  }

  async recv(timeout = RECV_TIMEOUT) {
    const { data, isBinary } = await this.recvRaw(timeout);
    assert.equal(isBinary, false, 'expected a text frame, got a binary frame');
    try {
      return JSON.parse(data);
    } catch {
      throw new Error(`server sent a text frame that is not JSON: ${data.slice(0, 200)}`);
    }
  }

  async expect(expected, timeout = RECV_TIMEOUT) {
    const msg = await this.recv(timeout);
    assert.deepStrictEqual(msg, expected);
    return msg;
  }

  async expectSilence(ms = SILENCE) {
    try {
      const got = await this.recvRaw(ms);
      assert.fail(`expected no message, got ${JSON.stringify(got.data.toString())}`);
    } catch (e) {
      if (!/no message within/.test(e.message)) throw e;
    }
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj));
  }

  async subscribe(channel) {
    this.send(req('sgc@subscribe', { channel }));
    await this.expect({ jsonrpc: '2.0', result: { method: 'sgc@subscribe', channel } });
  }

  publish(channel, message) {
    this.send(req('sgc@publish', { channel, message }));
  }

  async alive() {
    this.send(req('sgc@session'));
    await this.expect(this.session);
  }

  async roundtrip() {
    const ch = uniq('roundtrip');
    await this.subscribe(ch);
    this.publish(ch, 'ping');
    await this.expect(event(ch, 'ping'));
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
    }
  }
}

function checkSession(msg) {
  assert.deepStrictEqual(Object.keys(msg).sort(), ['id', 'jsonrpc', 'qos', 'result']);
  assert.equal(msg.jsonrpc, '2.0');
  assert.equal(msg.qos, 'qosLevel0');
  assert.deepStrictEqual(Object.keys(msg.result).sort(), ['message', 'method']);
  assert.equal(msg.result.method, 'sgc@session');
  assert.match(msg.result.message, GUID_RE);
  assert.equal(msg.id, msg.result.message);
  return msg.result.message;
}

// ---------------------------------------------------------------- tests

describe('wscluster with the ws client', { timeout: 120000 }, () => {
  let srv;
  const clients = [];
  const open = async (...args) => {
    const c = await Client.open(srv.url, ...args);
    clients.push(c);
    return c;
  };

  before(async () => {
    srv = await startServer();
  });

  after(async () => {
    for (const c of clients) c.close();
    const crashed = srv && srv.proc.exitCode !== null;
    await stopServer(srv);
    if (crashed) throw new Error(`server exited during the tests\n${srv.stderr()}`);
  });

  it('prints its two addresses on stdout: listening and cluster-listening', async () => {
    await new Promise((r) => setTimeout(r, 300));
    const lines = [...srv.lines].sort();
    assert.equal(lines.length, 2);
    assert.match(lines[0], /^cluster-listening 127\.0\.0\.1:\d+$/);
    assert.equal(lines[1], `listening ${srv.addr}`);
  });

  it('sends the session message on connect', async () => {
    const a = await open();
    const b = await open([]); // no sub-protocol offered: still sgc
    assert.equal(a.ws.protocol, 'esegece.com');
    assert.equal(b.ws.protocol, '');
    assert.notEqual(checkSession(a.session), checkSession(b.session));
    await a.alive();
  });

  it('acknowledges a subscribe with id, then answers it', async () => {
    const c = await open();
    c.send(req('sgc@subscribe', { channel: 'news' }, '1'));
    await c.expect(ack('1'));
    await c.expect({ jsonrpc: '2.0', result: { method: 'sgc@subscribe', channel: 'news' }, id: '1' });
  });

  it('delivers a publication to a subscriber exactly', async () => {
    const sub = await open();
    const pub = await open();
    sub.send(req('sgc@subscribe', { channel: 'news' }, '1'));
    await sub.expect(ack('1'));
    await sub.expect({ jsonrpc: '2.0', result: { method: 'sgc@subscribe', channel: 'news' }, id: '1' });
    pub.publish('news', 'hello');
    await sub.expect({ jsonrpc: '2.0', result: { method: 'sgc@event', channel: 'news', message: 'hello' } });
    await pub.expectSilence();
  });

  it('acks a publish with id to the publisher only', async () => {
    const sub = await open();
    const pub = await open();
    const ch = uniq('pubid');
    await sub.subscribe(ch);
    pub.send(req('sgc@publish', { channel: ch, message: 'x' }, 'p-1'));
    await pub.expect(ack('p-1'));
    await sub.expect(event(ch, 'x'));
    await pub.expectSilence();
  });

  it('broadcasts without a channel to every connection', async () => {
    const cs = [await open(), await open(), await open([])];
    const text = uniq('to everyone');
    cs[0].send(req('sgc@broadcast', { message: text }));
    for (const c of cs) {
      await c.expect({ jsonrpc: '2.0', result: { method: 'sgc@message', channel: '', message: text } });
    }
  });

  it('answers bad JSON with -32700 and keeps the connection', async () => {
    const bystander = await open();
    const c = await open();
    c.send('this is {not json');
    const err = await c.recv();
    assert.equal(err.jsonrpc, '2.0');
    assert.equal(err.error?.code, -32700, `observed ${JSON.stringify(err)}`);
    assert.equal(typeof err.error.message, 'string');
    assert.ok('id' in err && err.id === null, `error id must be null: ${JSON.stringify(err)}`);
    await c.alive();
    await bystander.roundtrip();
  });

  it('answers a binary frame with -32600 and keeps the connection', async () => {
    const bystander = await open();
    const c = await open();
    c.send(Buffer.from('{"jsonrpc":"2.0","method":"sgc@session"}'));
    const err = await c.recv();
    assert.equal(err.error?.code, -32600, `observed ${JSON.stringify(err)}`);
    assert.equal(err.id, null);
    await c.alive();
    await bystander.roundtrip();
  });

  it('answers sgc@protocol with the text esegece.com', async () => {
    const c = await open();
    c.send(req('sgc@protocol'));
    const { data, isBinary } = await c.recvRaw();
    assert.equal(isBinary, false);
    assert.equal(data, 'esegece.com');
  });

  it('refuses unknown sub-protocols with HTTP 400', async () => {
    await assert.rejects(Client.open(srv.url, ['mqtt']), /HTTP 400/);
    const bystander = await open();
    await bystander.roundtrip();
  });
});
