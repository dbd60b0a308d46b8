#!/usr/bin/env node
// Sends one pushgate broadcast from Node.js and follows it to the end, with
// nothing but Node's built-in modules (Node 20 or later; no npm packages).
//
//   export PUSHGATE_URL=http://127.0.0.1:8080 PUSHGATE_KEY_ID=city-alerts PUSHGATE_KEY=city-alerts.key
//   node broadcast.mjs --topic citizens --title "Flood warning" --body "Avoid Manggarai until 18:00."
//   node broadcast.mjs --tokens devices.json --body "..."   # [{"platform":"fcm","token":"..."}]
//
// It prints the broadcast id, polls the broadcast's status until it has
// ended, and prints its final state and counters. Exit status: 0 when the
// broadcast completed; 1 when the gateway refused a request (its problem
// code and detail are printed) or could not be reached; 2 for a usage
// error; 3 when the broadcast ended in another state (killed, cancelled,
// expired, recalled).
//
// Every request is signed the way pushgate's Go client signs it: HTTP
// Message Signatures (RFC 9421) with Ed25519, over a body bound by
// Content-Digest (RFC 9530). signRequest below is the part to copy; the
// profile it follows is described in docs/ARCHITECTURE.md, "Signing
// profile", and implemented by signing/sign.go.

import { createHash, createPrivateKey, randomBytes, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";

// ---------------------------------------------------------------------------
// Signing: the whole of pushgate's request-signing profile.

// signRequest returns the headers that sign one request: Content-Digest
// (only with a body), Signature-Input and Signature. url is the full URL
// the request goes to, body the exact bytes sent (a Buffer, or null), and
// contentType the Content-Type sent with a body, which is signed too.
function signRequest({ method, url, body, contentType, keyId, privateKey }) {
  const u = new URL(url);
  const headers = {};

  // The signature covers the method, the authority (host[:port], exactly
  // as fetch sends it in the Host header, lowercased) and the path. A query
  // string, when there is one, is covered as "@query".
  const components = [
    ["@method", method.toUpperCase()],
    ["@authority", u.host.toLowerCase()],
    ["@path", u.pathname || "/"],
  ];
  if (u.search !== "") {
    components.push(["@query", u.search]); // "?a=b", the "?" included
  }

  // A body is bound by its SHA-256 digest in Content-Digest, and both that
  // field and Content-Type are covered.
  if (body && body.length > 0) {
    const digest = createHash("sha256").update(body).digest("base64");
    headers["content-digest"] = `sha-256=:${digest}:`;
    headers["content-type"] = contentType;
    components.push(["content-digest", headers["content-digest"]]);
    components.push(["content-type", contentType]);
  }

  // The signature parameters, in this order: created (Unix seconds; the
  // gateway allows 300 s of clock skew), keyid, alg, a fresh random nonce
  // (the gateway refuses a nonce it has seen: a captured request cannot be
  // replayed), and tag="pushgate", by which the gateway finds its signature.
  // An "expires" parameter is optional and honoured when present.
  const created = Math.floor(Date.now() / 1000);
  const nonce = randomBytes(16).toString("base64url");
  const covered = components.map(([name]) => `"${name}"`).join(" ");
  const params = `(${covered});created=${created};keyid="${keyId}";alg="ed25519";nonce="${nonce}";tag="pushgate"`;

  // The signature base (RFC 9421 section 2.5): one line per covered
  // component, then the parameters; lines end with "\n", the last has none.
  const base =
    components.map(([name, value]) => `"${name}": ${value}\n`).join("") + `"@signature-params": ${params}`;

  // Ed25519 takes no separate hash: the algorithm argument is null.
  const signature = sign(null, Buffer.from(base, "utf8"), privateKey).toString("base64");

  // "pushgate" is the signature's label: any name would do, as long as both
  // fields use the same one.
  headers["signature-input"] = `pushgate=${params}`;
  headers["signature"] = `pushgate=:${signature}:`;
  return headers;
}

// ---------------------------------------------------------------------------
// Calling the API.

// ProblemError is an error answer of the API: an RFC 9457 problem document
// with a stable, machine-readable code (such as bad_signature,
// topic_not_allowed or kill_switch_active) and a detail for people.
// retryAfter is the answer's Retry-After in seconds, or null.
class ProblemError extends Error {
  constructor(status, problem, retryAfter) {
    super(`${problem.code}: ${problem.detail ?? problem.title ?? ""}`);
    this.status = status;
    this.code = problem.code;
    this.detail = problem.detail ?? "";
    this.retryAfter = retryAfter;
  }
}

// callAPI signs and sends one request, and returns the decoded JSON answer
// and its HTTP status. An error answer throws a ProblemError. Each call
// signs afresh: a new nonce and created time for every request sent, a
// retry included.
async function callAPI(gateway, key, method, path, payload) {
  const url = gateway + path;
  const body = payload === undefined ? null : Buffer.from(JSON.stringify(payload), "utf8");
  const headers = {
    accept: "application/json, application/problem+json",
    ...signRequest({ method, url, body, contentType: "application/json", ...key }),
  };
  // The body sent must be exactly the bytes that were digested.
  const resp = await fetch(url, { method, headers, body, redirect: "error", signal: AbortSignal.timeout(60_000) });
  const text = await resp.text();
  const mediaType = (resp.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  if (!resp.ok) {
    if (mediaType === "application/problem+json") {
      const problem = JSON.parse(text);
      if (problem.code) {
        const retryAfter = Number.parseInt(resp.headers.get("retry-after") ?? "", 10);
        throw new ProblemError(resp.status, problem, Number.isNaN(retryAfter) ? null : retryAfter);
      }
    }
    throw new Error(`the gateway answered HTTP ${resp.status} without a problem document`);
  }
  return { status: resp.status, answer: text === "" ? null : JSON.parse(text) };
}

// submitBroadcast submits a broadcast: POST /v1/broadcasts, answered 202
// for a new broadcast. The idempotency key in the body makes a retry safe:
// the gateway answers a repeat of the same key and body with the first
// broadcast (200) instead of sending it twice. So a submission that got no
// answer, or "unavailable", or idempotency_conflict with a Retry-After (the
// first submission is still being stored), is sent again, signed afresh. An
// idempotency_conflict without Retry-After means the key was used with
// another body: that is final.
async function submitBroadcast(gateway, key, request) {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await callAPI(gateway, key, "POST", "/v1/broadcasts", request)).answer;
    } catch (err) {
      // fetch throws a TypeError when no answer came, a TimeoutError when
      // it came too late.
      const noAnswer = err.name === "TypeError" || err.name === "TimeoutError";
      const busy =
        err instanceof ProblemError &&
        (err.code === "unavailable" || (err.code === "idempotency_conflict" && err.retryAfter !== null));
      if (!(noAnswer || busy) || attempt === 3) {
        throw err;
      }
      console.error(`submit: ${describe(err)}; trying again`);
      await sleep(1000 * Math.min(err.retryAfter ?? 2 * attempt, 30));
    }
  }
}

// finished mirrors the Go client's api.Status.Finished: a broadcast has
// ended when it has a finished_at and is not still recalling, or when it
// expired waiting for approvals.
function finished(status) {
  return (Boolean(status.finished_at) && status.state !== "recalling") || status.state === "expired";
}

// waitBroadcast polls GET /v1/broadcasts/{id} (signed, like every route)
// until the broadcast has ended, and returns its last status. A gateway
// answering "unavailable" (its Redis blinked) is asked again at the next
// poll; any other problem ends the wait.
async function waitBroadcast(gateway, key, id, pollSeconds, timeoutSeconds) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let last = "";
  for (;;) {
    try {
      const { answer: status } = await callAPI(gateway, key, "GET", `/v1/broadcasts/${encodeURIComponent(id)}`);
      if (finished(status)) {
        return status;
      }
      const c = status.counters;
      const line = `${status.state}: ${c.sent} sent, ${c.failed + c.invalid_token} failed, ${c.expired} expired of ${c.targeted}`;
      if (line !== last) {
        console.log(`  ${line}`);
        last = line;
      }
    } catch (err) {
      if (!(err instanceof ProblemError) || err.code !== "unavailable") {
        throw err;
      }
    }
    if (Date.now() > deadline) {
      throw new Error(`broadcast ${id} has not ended after ${timeoutSeconds}s (see its status: ${gateway}/v1/broadcasts/${id})`);
    }
    await sleep(pollSeconds * 1000);
  }
}

// describe says what went wrong; fetch's own message ("fetch failed")
// keeps the reason in its cause.
function describe(err) {
  return err.cause?.message ? `${err.message}: ${err.cause.message}` : err.message;
}

// ---------------------------------------------------------------------------
// The command line.

class UsageError extends Error {}

// loadKey reads the PKCS#8 PEM private key (as `pushgate keygen` writes
// it) from a file, or takes the PEM itself when the value is one, which is
// how a secret often arrives in an environment variable.
function loadKey(source) {
  const pem = source.trimStart().startsWith("-----BEGIN") ? source : readFileSync(source, "utf8");
  let privateKey;
  try {
    privateKey = createPrivateKey({ key: pem, format: "pem" });
  } catch {
    // The message never quotes the key.
    throw new UsageError("the key is not a PKCS#8 PEM private key");
  }
  if (privateKey.asymmetricKeyType !== "ed25519") {
    throw new UsageError(`the key is ${privateKey.asymmetricKeyType}, not Ed25519`);
  }
  return privateKey;
}

// readDevices reads a tokens audience: [{"platform":"fcm","token":"..."}].
function readDevices(file) {
  const devices = JSON.parse(readFileSync(file, "utf8"));
  if (!Array.isArray(devices) || devices.length === 0) {
    throw new UsageError(`${file}: want a non-empty JSON array of {"platform", "token"}`);
  }
  return devices;
}

function parseCommandLine(argv, env) {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      gateway: { type: "string" }, // default $PUSHGATE_URL
      "key-id": { type: "string" }, // default $PUSHGATE_KEY_ID
      key: { type: "string" }, // default $PUSHGATE_KEY: a file name or the PEM itself
      topic: { type: "string" },
      tokens: { type: "string" },
      title: { type: "string", default: "" },
      body: { type: "string" },
      ttl: { type: "string" },
      "idempotency-key": { type: "string" },
      poll: { type: "string", default: "1" },
      timeout: { type: "string", default: "600" },
    },
  });
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  }
  const gateway = (values.gateway ?? env.PUSHGATE_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
  const keyId = values["key-id"] ?? env.PUSHGATE_KEY_ID ?? "";
  const keySource = values.key ?? env.PUSHGATE_KEY ?? "";
  if (!/^https?:\/\/[^/]+/.test(gateway)) {
    throw new UsageError(`--gateway ${JSON.stringify(gateway)}: want an http or https URL`);
  }
  // Key ids are letters, digits and . _ - (the keyring's rule), so they
  // need no escaping inside the quoted keyid parameter.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(keyId)) {
    throw new UsageError("--key-id (or PUSHGATE_KEY_ID) is required: the key's id in the gateway's keyring");
  }
  if (keySource === "") {
    throw new UsageError("--key (or PUSHGATE_KEY) is required: the PKCS#8 PEM file of the key");
  }
  if ((values.topic === undefined) === (values.tokens === undefined)) {
    throw new UsageError("give exactly one of --topic and --tokens");
  }
  if (!values.body) {
    throw new UsageError("--body is required");
  }
  const poll = Number(values.poll);
  const timeout = Number(values.timeout);
  if (!(poll > 0) || !(timeout > 0)) {
    throw new UsageError("--poll and --timeout are positive numbers of seconds");
  }

  // The body of POST /v1/broadcasts (api.BroadcastRequest in the Go code).
  const request = {
    // Without one, a random key still makes this run's retries safe.
    idempotency_key: values["idempotency-key"] ?? `example-${randomBytes(12).toString("hex")}`,
    audience: values.topic !== undefined ? { topic: values.topic } : { tokens: readDevices(values.tokens) },
    message: { title: values.title, body: values.body },
  };
  if (values.ttl !== undefined) {
    request.message.ttl = values.ttl; // a Go duration such as "15m"; default 1h
  }
  return { gateway, key: { keyId, privateKey: loadKey(keySource) }, request, poll, timeout };
}

async function main() {
  let opts;
  try {
    opts = parseCommandLine(process.argv.slice(2), process.env);
  } catch (err) {
    console.error(`broadcast: ${err.message}`);
    return 2;
  }
  const { gateway, key, request, poll, timeout } = opts;
  try {
    const sub = await submitBroadcast(gateway, key, request);
    console.log(`broadcast ${sub.id} ${sub.state}`);
    console.log(`status: ${gateway}${sub.status_url}`);

    const status = await waitBroadcast(gateway, key, sub.id, poll, timeout);
    console.log(`final state: ${status.state}`);
    const counters = Object.entries(status.counters).map(([name, n]) => `${name}=${n}`);
    console.log(`counters: ${counters.join(" ")}`);
    return status.state === "completed" ? 0 : 3;
  } catch (err) {
    if (err instanceof ProblemError) {
      console.error(`broadcast: refused (HTTP ${err.status}): ${err.code}: ${err.detail}`);
    } else {
      console.error(`broadcast: ${describe(err)}`);
    }
    return 1;
  }
}

process.exitCode = await main();
