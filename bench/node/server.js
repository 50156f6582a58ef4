// One node of the peer cluster: Socket.IO on Node.js with the Redis
// adapter, as its documentation sets it up. A client joins a room to
// subscribe (acknowledged once joined) and publishes with
// io.to(room).emit, which reaches the room's members on every node.
//
// Usage: REDIS_URL=redis://127.0.0.1:PORT/ node server.js
// Prints "listening 127.0.0.1:PORT" once Redis is connected.
"use strict";

const http = require("http");
const { once } = require("events");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const Redis = require("ioredis");

async function main() {
  const pub = new Redis(process.env.REDIS_URL);
  const sub = pub.duplicate();
  await Promise.all([once(pub, "ready"), once(sub, "ready")]);

  const httpServer = http.createServer();
  // WebSocket only (no long-polling), no compression: the same wire as
  // the server it is compared with.
  const io = new Server(httpServer, {
    transports: ["websocket"],
    serveClient: false,
    perMessageDeflate: false,
  });
  io.adapter(createAdapter(pub, sub));

  io.on("connection", (socket) => {
    socket.on("subscribe", (channel, ack) => {
      socket.join(channel);
      if (typeof ack === "function") ack(true);
    });
    socket.on("publish", (channel, message) => {
      io.to(channel).emit("event", channel, message);
    });
  });

  httpServer.listen(0, "127.0.0.1", () => {
    const { address, port } = httpServer.address();
    console.log(`listening ${address}:${port}`);
  });
  process.on("SIGTERM", () => process.exit(0));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
