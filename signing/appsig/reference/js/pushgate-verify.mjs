// Reference verifier of pushgate's app signature for JavaScript (Node 18 or
// later, built-in crypto only). docs/APP-VERIFICATION.md is the contract;
// the Go package signing/appsig is the reference this file follows check
// for check, and both pass signing/appsig/testdata/vectors.json
// (run-vectors.mjs).
//
//   import { verifyPush, History } from "./pushgate-verify.mjs";
//
//   const history = new History(); // kept as long as limits.max_ttl
//   try {
//     const claims = verifyPush(keys, device, push);
//     history.admit(claims);
//     // show claims.title and claims.body, or act on claims.kind
//   } catch (err) {
//     // err.code is the refusal code: show nothing, count it
//   }

import { createHash, createPublicKey, verify as verifySignature } from "node:crypto";

/** The push data key that carries the signed block. */
export const DATA_KEY = "pushgate";

/** The block format this verifier knows. */
export const VERSION = 1;

/** The kinds of push. */
export const Kind = Object.freeze({
  ALERT: "alert",
  RECALL_REPLACE: "recall-replace",
  RECALL_REMOVE: "recall-remove",
});

/** The refusal codes, in the order of the checks. */
export const Code = Object.freeze({
  MALFORMED: "malformed",
  UNSUPPORTED_VERSION: "unsupported_version",
  UNKNOWN_KEY: "unknown_key",
  BAD_SIGNATURE: "bad_signature",
  EXPIRED: "expired",
  WRONG_AUDIENCE: "wrong_audience",
  ALREADY_SHOWN: "already_shown",
});

// DOMAIN starts the signed bytes.
const DOMAIN = "pushgate-notification/1";

const KINDS = new Set(Object.values(Kind));

/** A push the app must not act on; code is one of Code. */
export class RefusalError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "RefusalError";
    this.code = code;
  }
}

function refuse(code, message) {
  return new RefusalError(code, message);
}

/**
 * Checks a received push, in the order of docs/APP-VERIFICATION.md, and
 * returns its verified claims: what to show, replace or remove. Whether it
 * was acted on before is History's to check.
 *
 * @param keys the trusted app-signing public keys by key id, as a Map or an
 *   object whose values are the raw 32-byte keys (Uint8Array or Buffer).
 * @param device { token, topics }: this phone's push token and the topics
 *   the app subscribed it to.
 * @param push { title, body, data }: the notification's own text (empty or
 *   absent for a data-only push) and the push's data (a Map or an object of
 *   strings), where data.pushgate is the block's JSON text.
 * @param now the clock in Unix seconds (a number or a bigint); the current
 *   time when absent.
 * @returns the claims { keyId, kind, broadcast, collapse, expires (a
 *   bigint, Unix seconds), audience, title, body, data (without the
 *   pushgate key) }.
 * @throws RefusalError with the refusal code.
 */
export function verifyPush(keys, device, push, now = Math.floor(Date.now() / 1000)) {
  const data = toMap(push.data);
  if (!data.has(DATA_KEY)) {
    throw refuse(Code.MALFORMED, `the push carries no "${DATA_KEY}" block`);
  }
  const raw = data.get(DATA_KEY);
  if (typeof raw !== "string") {
    throw refuse(Code.MALFORMED, `the "${DATA_KEY}" block is not JSON text`);
  }
  const block = decodeBlock(raw);
  if (block.v !== BigInt(VERSION)) {
    throw refuse(Code.UNSUPPORTED_VERSION, `block version ${block.v}, this verifier knows ${VERSION}`);
  }
  const { claims, sig } = claimsOf(block, push, data);
  const trusted = toMap(keys);
  if (!trusted.has(block.kid)) {
    throw refuse(Code.UNKNOWN_KEY, `key id ${JSON.stringify(block.kid)} is not trusted`);
  }
  if (!signatureVerifies(trusted.get(block.kid), canonicalEncode(claims), sig)) {
    throw refuse(Code.BAD_SIGNATURE, `the signature does not verify under key ${JSON.stringify(block.kid)}`);
  }
  if (unixSeconds(now) > claims.expires) {
    throw refuse(Code.EXPIRED, `expired at ${claims.expires}`);
  }
  if (!addressed(device, claims.audience)) {
    throw refuse(Code.WRONG_AUDIENCE, `addressed to ${JSON.stringify(claims.audience)}, not to this device`);
  }
  return claims;
}

/**
 * Returns the bytes a signature covers: the domain string, then key id,
 * kind, broadcast, collapse, expires (decimal), audience, title and body,
 * each as a 4-byte big-endian length and its UTF-8 bytes; then the number
 * of data pairs (4 bytes, big-endian) and each pair, key then value, in the
 * bytewise order of the keys' UTF-8.
 *
 * @param claims as verifyPush returns them; expires may be a bigint or an
 *   integer number, data a Map or an object of strings.
 * @returns a Buffer.
 */
export function canonicalEncode(claims) {
  const parts = [Buffer.from(DOMAIN, "ascii")];
  const field = (bytes) => parts.push(uint32(bytes.length), bytes);
  for (const f of [claims.keyId, claims.kind, claims.broadcast, claims.collapse,
    BigInt(claims.expires).toString(), claims.audience, claims.title, claims.body]) {
    field(utf8(f));
  }
  const pairs = [...toMap(claims.data)]
    .map(([k, v]) => [utf8(k), utf8(v)])
    .sort((a, b) => Buffer.compare(a[0], b[0]));
  parts.push(uint32(pairs.length));
  for (const [k, v] of pairs) {
    field(k);
    field(v);
  }
  return Buffer.concat(parts);
}

/** The audience binding of a push to one device token. */
export function audienceToken(token) {
  return "token:" + createHash("sha256").update(utf8(token)).digest("hex");
}

/**
 * What the app remembers of the broadcasts it acted on, so that none is
 * shown twice: an alert shows only for a broadcast never seen; a
 * replacement only for one not yet replaced or removed; a removal always
 * acts.
 */
export class History {
  #seen = new Map();

  /**
   * Records claims, or throws a RefusalError with Code.ALREADY_SHOWN for a
   * push that must not be shown again.
   */
  admit(claims) {
    const prev = this.#seen.get(claims.broadcast);
    if (claims.kind === Kind.ALERT && prev !== undefined) {
      throw refuse(Code.ALREADY_SHOWN, `broadcast ${claims.broadcast} was already shown (${prev})`);
    }
    if (claims.kind === Kind.RECALL_REPLACE && prev !== undefined && prev !== Kind.ALERT) {
      throw refuse(Code.ALREADY_SHOWN, `broadcast ${claims.broadcast} was already ${prev}`);
    }
    this.#seen.set(claims.broadcast, claims.kind);
  }
}

// claimsOf rebuilds what the block's signature covers from the block and
// the push, after the block's own checks.
function claimsOf(block, push, data) {
  if (!KINDS.has(block.kind)) {
    throw refuse(Code.MALFORMED, `unknown kind ${JSON.stringify(block.kind)}`);
  }
  if (block.kid === "" || block.aud === "") {
    throw refuse(Code.MALFORMED, "the block has no key id or no audience");
  }
  if (block.kind === Kind.RECALL_REMOVE) {
    if (block.recall === "" || block.broadcast !== "") {
      throw refuse(Code.MALFORMED, `a removal names the removed broadcast under "recall" only`);
    }
  } else if (block.broadcast === "" || block.recall !== "") {
    throw refuse(Code.MALFORMED, `a ${block.kind} names its broadcast under "broadcast" only`);
  }
  const sig = decodeSignature(block.sig);
  if (sig === null) {
    throw refuse(Code.MALFORMED, "the signature is not 64 bytes of unpadded base64url");
  }
  let title = pushText(push.title);
  let body = pushText(push.body);
  if (block.title !== undefined || block.body !== undefined) {
    if (title !== "" || body !== "") {
      throw refuse(Code.MALFORMED, "the push has text of its own beside the block's");
    }
    title = block.title ?? "";
    body = block.body ?? "";
  }
  // A null-prototype object keeps any key, "__proto__" included, as data.
  const claimsData = Object.create(null);
  for (const [k, v] of data) {
    if (k === DATA_KEY) {
      continue;
    }
    if (typeof v !== "string") {
      throw refuse(Code.MALFORMED, `data value ${JSON.stringify(k)} is not a string`);
    }
    claimsData[k] = v;
  }
  const claims = {
    keyId: block.kid,
    kind: block.kind,
    broadcast: block.broadcast + block.recall,
    collapse: block.collapse,
    expires: block.exp,
    audience: block.aud,
    title,
    body,
    data: claimsData,
  };
  return { claims, sig };
}

function pushText(text) {
  if (text === undefined || text === null) {
    return "";
  }
  if (typeof text !== "string") {
    throw refuse(Code.MALFORMED, "the notification's text is not a string");
  }
  return text;
}

// decodeSignature decodes unpadded base64url to the 64 bytes of an
// Ed25519 signature, or returns null. Line breaks are skipped, as the Go
// reference's decoder skips them; the unused low bits of the last
// character are ignored, as there.
function decodeSignature(text) {
  const compact = text.replace(/[\r\n]/g, "");
  if (!/^[A-Za-z0-9_-]{86}$/.test(compact)) {
    return null;
  }
  const sig = Buffer.from(compact, "base64url");
  return sig.length === 64 ? sig : null;
}

function signatureVerifies(publicKey, message, sig) {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) {
    return false;
  }
  try {
    const key = createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") },
      format: "jwk",
    });
    return verifySignature(null, message, key, sig);
  } catch {
    // A key the crypto library cannot use verifies nothing.
    return false;
  }
}

// addressed reports whether audience names this device: "all", a topic the
// device is subscribed to, or the binding of its own token.
function addressed(device, audience) {
  if (audience === "all") {
    return true;
  }
  if (audience.length > "topic:".length && audience.startsWith("topic:")) {
    return (device.topics ?? []).includes(audience.slice("topic:".length));
  }
  if (audience.startsWith("token:")) {
    const token = device.token ?? "";
    return token !== "" && audience === audienceToken(token);
  }
  return false;
}

function unixSeconds(now) {
  if (typeof now === "bigint") {
    return now;
  }
  if (typeof now !== "number" || !Number.isFinite(now)) {
    throw new TypeError("now must be Unix seconds, a number or a bigint");
  }
  return BigInt(Math.floor(now));
}

function toMap(entries) {
  if (entries === undefined || entries === null) {
    return new Map();
  }
  return entries instanceof Map ? entries : new Map(Object.entries(entries));
}

// utf8 encodes text as UTF-8; an unpaired surrogate becomes U+FFFD.
function utf8(text) {
  return Buffer.from(text, "utf8");
}

function uint32(n) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

// The block's fields and how each decodes: "string", "int" (a 64-bit
// integer), or "text" (a string that may be absent).
const BLOCK_FIELDS = Object.freeze({
  __proto__: null,
  v: "int",
  kid: "string",
  kind: "string",
  broadcast: "string",
  recall: "string",
  collapse: "string",
  exp: "int",
  aud: "string",
  title: "text",
  body: "text",
  sig: "string",
});

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

// decodeBlock decodes the block's JSON text as the Go reference decodes it
// into its Block struct, so that every verifier reads the same block from
// the same text: the text must be one JSON value; null decodes to an empty
// block, anything else but an object is malformed; members are matched to
// fields as Go's encoding/json matches them (exactly, else ignoring ASCII
// case, with U+017F and U+212A folding to "s" and "k"); a later member
// overrides an earlier one; null leaves a field as it was, but for title
// and body, which it makes absent; a field of the wrong type, or an
// integer with a fraction, an exponent or out of the 64-bit range, is
// malformed; other members are skipped.
function decodeBlock(text) {
  let doc;
  try {
    doc = parseJSON(text);
  } catch (err) {
    if (err instanceof JSONSyntaxError) {
      throw refuse(Code.MALFORMED, `the "${DATA_KEY}" block is not JSON: ${err.message}`);
    }
    throw err;
  }
  const block = {
    v: 0n, kid: "", kind: "", broadcast: "", recall: "", collapse: "",
    exp: 0n, aud: "", title: undefined, body: undefined, sig: "",
  };
  if (doc === null) {
    return block;
  }
  if (!(doc instanceof JSONObject)) {
    throw refuse(Code.MALFORMED, `the "${DATA_KEY}" block is not a JSON object`);
  }
  for (const [key, value] of doc.members) {
    const name = blockField(key);
    if (name === undefined) {
      continue;
    }
    const type = BLOCK_FIELDS[name];
    if (value === null) {
      if (type === "text") {
        block[name] = undefined;
      }
      continue;
    }
    if (type === "int") {
      block[name] = int64(value, name);
    } else if (typeof value === "string") {
      block[name] = value;
    } else {
      throw refuse(Code.MALFORMED, `block field ${name} is not a string`);
    }
  }
  return block;
}

// blockField returns the block field a member key names, or undefined.
function blockField(key) {
  let folded = "";
  for (const ch of key) {
    if (ch === "\u017f") {
      folded += "s";
    } else if (ch === "\u212a") {
      folded += "k";
    } else if (ch < "\x80") {
      folded += ch.toLowerCase();
    } else {
      return undefined; // no other character folds to a field name's
    }
  }
  return folded in BLOCK_FIELDS ? folded : undefined;
}

function int64(value, name) {
  if (value instanceof JSONNumber && /^-?(0|[1-9][0-9]*)$/.test(value.text)) {
    const n = BigInt(value.text);
    if (n >= INT64_MIN && n <= INT64_MAX) {
      return n;
    }
  }
  throw refuse(Code.MALFORMED, `block field ${name} is not a 64-bit integer`);
}

// A strict JSON parser (RFC 8259, as the Go reference reads it) for the
// block: objects keep their members in order, duplicates included, and
// numbers keep their text, so that decodeBlock can read them exactly. It
// is iterative, with the Go reference's nesting limit, so deep nesting is
// a syntax error rather than a stack overflow.

/** A JSON object: its [key, value] members in order. */
class JSONObject {
  members = [];
}

/** A JSON number, as written. */
class JSONNumber {
  constructor(text) {
    this.text = text;
  }
}

class JSONSyntaxError extends Error {}

const MAX_DEPTH = 10000;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const ESCAPES = Object.freeze({
  __proto__: null, '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t",
});

// hex4 returns the value of the four hex digits at s[at], or -1.
function hex4(s, at) {
  const digits = s.slice(at, at + 4);
  return /^[0-9a-fA-F]{4}$/.test(digits) ? parseInt(digits, 16) : -1;
}

function parseJSON(text) {
  return new JSONParser(text).document();
}

class JSONParser {
  constructor(text) {
    this.s = text;
    this.i = 0;
  }

  fail(what) {
    throw new JSONSyntaxError(`${what} at offset ${this.i}`);
  }

  space() {
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c !== " " && c !== "\t" && c !== "\n" && c !== "\r") {
        return;
      }
      this.i++;
    }
  }

  // document parses the whole text as one value.
  document() {
    // Open containers, innermost last: { value, key } where key is the
    // pending member key of an object.
    const open = [];
    for (;;) {
      this.space();
      let value;
      const c = this.s[this.i];
      if (c === "{" || c === "[") {
        if (open.length >= MAX_DEPTH) {
          this.fail("nesting too deep");
        }
        this.i++;
        const frame = { value: c === "{" ? new JSONObject() : [], key: undefined };
        this.space();
        if (this.s[this.i] === (c === "{" ? "}" : "]")) {
          this.i++;
          value = frame.value;
        } else {
          open.push(frame);
          if (c === "{") {
            frame.key = this.memberKey();
          }
          continue;
        }
      } else {
        value = this.scalar();
      }
      // value is complete: add it to its container, closing each
      // container that ends here.
      for (;;) {
        const top = open.at(-1);
        if (top === undefined) {
          this.space();
          if (this.i !== this.s.length) {
            this.fail("text after the value");
          }
          return value;
        }
        const isObject = top.value instanceof JSONObject;
        if (isObject) {
          top.value.members.push([top.key, value]);
        } else {
          top.value.push(value);
        }
        this.space();
        const next = this.s[this.i++];
        if (next === ",") {
          if (isObject) {
            top.key = this.memberKey();
          }
          break;
        }
        if (next !== (isObject ? "}" : "]")) {
          this.i--;
          this.fail(isObject ? `expected "," or "}"` : `expected "," or "]"`);
        }
        open.pop();
        value = top.value;
      }
    }
  }

  memberKey() {
    this.space();
    if (this.s[this.i] !== '"') {
      this.fail("expected a member name");
    }
    const key = this.string();
    this.space();
    if (this.s[this.i] !== ":") {
      this.fail(`expected ":"`);
    }
    this.i++;
    return key;
  }

  scalar() {
    const c = this.s[this.i];
    if (c === '"') {
      return this.string();
    }
    if (c === "-" || (c >= "0" && c <= "9")) {
      NUMBER.lastIndex = this.i;
      const m = NUMBER.exec(this.s);
      if (m === null) {
        this.fail("bad number");
      }
      this.i += m[0].length;
      return new JSONNumber(m[0]);
    }
    for (const [word, value] of [["true", true], ["false", false], ["null", null]]) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return value;
      }
    }
    this.fail(c === undefined ? "unexpected end" : "unexpected character");
  }

  // string parses a string literal. An escaped surrogate that is not half
  // of an escaped pair decodes to U+FFFD, as in the Go reference.
  string() {
    const s = this.s;
    let out = "";
    let i = this.i + 1;
    let start = i;
    for (;;) {
      if (i >= s.length) {
        this.i = i;
        this.fail("unterminated string");
      }
      const c = s.charCodeAt(i);
      if (c === 0x22) {
        this.i = i + 1;
        return out + s.slice(start, i);
      }
      if (c < 0x20) {
        this.i = i;
        this.fail("control character in string");
      }
      if (c !== 0x5c) {
        i++;
        continue;
      }
      out += s.slice(start, i);
      const e = s[i + 1];
      if (e !== undefined && e in ESCAPES) {
        out += ESCAPES[e];
        i += 2;
      } else if (e === "u") {
        const u = hex4(s, i + 2);
        if (u < 0) {
          this.i = i;
          this.fail("bad \\u escape");
        }
        i += 6;
        if (u < 0xd800 || u >= 0xe000) {
          out += String.fromCharCode(u);
        } else {
          const low = u < 0xdc00 && s.startsWith("\\u", i) ? hex4(s, i + 2) : -1;
          if (low >= 0xdc00 && low < 0xe000) {
            out += String.fromCharCode(u, low);
            i += 6;
          } else {
            out += "\ufffd";
          }
        }
      } else {
        this.i = i;
        this.fail("bad escape");
      }
      start = i;
    }
  }
}
