// hubforge's proxy: configurable-http-proxy's own command line, run in this process, with two additions.
//
// 1. It waits for the TLS certificate and key (--ssl-cert, --ssl-key). The hub makes a self-signed pair in the
//    certs volume at its first start, and the proxy starts first (the hub joins the proxy's network namespace).
// 2. It reloads them when either file changes (a renewal, or the operator's new pair): the HTTPS server takes the new
//    context for new connections, and no connection in flight is cut. Nothing restarts.
//
// 3. `--api-ip @stack` binds the API to the address the container has at its start, which is on the stack network
//    only (Swarm: the labs' networks are joined later), so a lab cannot even reach the API's port.
//
// `start.cjs --health` is the image's HEALTHCHECK: the API answers GET /api/routes with the shared token.
"use strict";

const fs = require("fs");
const http = require("http");
const https = require("https");
const os = require("os");
const path = require("path");

const CHP = path.join(__dirname, "node_modules", "configurable-http-proxy", "bin", "configurable-http-proxy");
const RELOAD_EVERY_MS = 10000;
const API_HOST_FILE = "/tmp/hubforge-proxy-api-host";
const WAIT_STEP_MS = 250;

function option(name) {
  const at = process.argv.indexOf(name);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : undefined;
}

function stackAddress() {
  // Swarm gives a task its overlays and, for the way out, docker_gwbridge, which carries the default route.
  let defaults = [];
  try {
    defaults = fs
      .readFileSync("/proc/net/route", "utf8")
      .split("\n")
      .slice(1)
      .map((line) => line.trim().split(/\s+/))
      .filter((fields) => fields[1] === "00000000")
      .map((fields) => fields[0]);
  } catch {
    // no routing table to read: every interface is a candidate
  }
  const found = [];
  for (const [name, addresses] of Object.entries(os.networkInterfaces())) {
    if (defaults.includes(name)) continue;
    for (const address of addresses || []) {
      if (address.family === "IPv4" && !address.internal) found.push(address.address);
    }
  }
  if (found.length !== 1) {
    console.error(`hubforge proxy: --api-ip @stack needs one stack network at the start, found: ${found.join(", ")}`);
    process.exit(2);
  }
  return found[0];
}

function health() {
  const port = Number(process.env.HUBFORGE_PROXY_API_PORT || 8001);
  let host = "127.0.0.1";
  try {
    host = fs.readFileSync(API_HOST_FILE, "utf8").trim() || host; // where the running proxy put its API
  } catch {
    // not written: the API is on loopback (or the proxy has not started yet, and the check fails anyway)
  }
  const request = http.get(
    {
      host,
      port,
      path: "/api/routes",
      timeout: 2500,
      headers: { Authorization: `token ${process.env.CONFIGPROXY_AUTH_TOKEN || ""}` },
    },
    (response) => {
      response.resume();
      if (response.statusCode !== 200) console.error(`unhealthy: the API answered ${response.statusCode}`);
      process.exit(response.statusCode === 200 ? 0 : 1);
    },
  );
  request.on("timeout", () => request.destroy(new Error("no answer in 2.5 s")));
  request.on("error", (error) => {
    console.error(`unhealthy: 127.0.0.1:${port}: ${error.message}`);
    process.exit(1);
  });
}

function stamp(file) {
  try {
    const stat = fs.statSync(file);
    return stat.size > 0 ? `${stat.ino}:${stat.size}:${stat.mtimeMs}` : null;
  } catch {
    return null;
  }
}

function waitFor(files, then) {
  let waited = 0;
  const check = () => {
    const missing = files.filter((file) => stamp(file) === null);
    if (missing.length === 0) return then();
    if (waited % 20000 === 0) {
      console.log(`hubforge proxy: waiting for ${missing.join(" and ")} (the hub makes them at its first start)`);
    }
    waited += WAIT_STEP_MS;
    setTimeout(check, WAIT_STEP_MS);
  };
  check();
}

function run(certFile, keyFile) {
  // configurable-http-proxy keeps its servers to itself: note the HTTPS one(s) as its command line makes them.
  const servers = [];
  const createServer = https.createServer;
  https.createServer = function (options, ...rest) {
    const server = createServer.call(this, options, ...rest);
    servers.push({ server, options });
    return server;
  };
  require(CHP);
  https.createServer = createServer;

  let seen = `${stamp(certFile)}|${stamp(keyFile)}`;
  setInterval(() => {
    const now = `${stamp(certFile)}|${stamp(keyFile)}`;
    if (now === seen || now.includes("null")) return;
    let cert, key;
    try {
      cert = fs.readFileSync(certFile);
      key = fs.readFileSync(keyFile);
      for (const { server, options } of servers) {
        if (options.cert) server.setSecureContext({ ...options, cert, key });
      }
    } catch (error) {
      // a pair caught half written: keep the old context and try again at the next tick
      console.error(`hubforge proxy: cannot load the new certificate yet: ${error.message}`);
      return;
    }
    seen = now;
    console.log(`hubforge proxy: loaded the new certificate ${certFile}`);
  }, RELOAD_EVERY_MS).unref();
}

if (process.argv.includes("--health")) {
  health();
} else {
  const at = process.argv.indexOf("--api-ip");
  if (at > 0 && process.argv[at + 1] === "@stack") {
    process.argv[at + 1] = stackAddress();
    fs.writeFileSync(API_HOST_FILE, process.argv[at + 1]);
  }
  const certFile = option("--ssl-cert");
  const keyFile = option("--ssl-key");
  if (certFile && keyFile) {
    waitFor([certFile, keyFile], () => run(certFile, keyFile));
  } else {
    require(CHP);
  }
}
