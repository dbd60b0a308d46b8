// Runs pushgate's app-signature test vectors through pushgate-verify.mjs:
//
//   node run-vectors.mjs ../../testdata/vectors.json
//
// Each case replays its history, then verifies and admits its push; the
// verdict must be the case's, and a push that verifies must have the
// case's canonical bytes. It prints one line per case that disagrees and
// exits 1 if any does (2 when it cannot read the file); otherwise it prints
// "N vectors passed".

import { readFileSync } from "node:fs";
import { History, RefusalError, canonicalEncode, verifyPush } from "./pushgate-verify.mjs";

function main(args) {
  if (args.length !== 1) {
    console.error("usage: node run-vectors.mjs VECTORS.json");
    return 2;
  }
  let vectors;
  try {
    vectors = JSON.parse(readFileSync(args[0], "utf8"));
  } catch (err) {
    console.error(`run-vectors: ${err.message}`);
    return 2;
  }
  const keys = new Map(Object.entries(vectors.keys).map(([id, k]) => [id, Buffer.from(k, "base64url")]));
  const device = { token: vectors.device.token, topics: vectors.device.topics ?? [] };
  const cases = vectors.cases ?? [];
  if (cases.length === 0) {
    console.log("no vectors in the file");
    return 1;
  }
  let failed = 0;
  for (const c of cases) {
    const problem = disagreement(c, keys, device, vectors.now);
    if (problem !== "") {
      failed++;
      console.log(`FAIL ${c.name}: ${problem}`);
    }
  }
  if (failed > 0) {
    console.log(`${failed} of ${cases.length} vectors failed`);
    return 1;
  }
  console.log(`${cases.length} vectors passed`);
  return 0;
}

// disagreement runs one case and returns how it disagrees with the
// vector, or "".
function disagreement(c, keys, device, now) {
  const history = new History();
  for (const seen of c.history ?? []) {
    try {
      history.admit({ broadcast: seen.broadcast, kind: seen.kind });
    } catch (err) {
      return `history: ${err.message}`;
    }
  }
  let got = "ok";
  let why = "";
  let claims;
  try {
    claims = verifyPush(keys, device, c.push, now);
    history.admit(claims);
  } catch (err) {
    if (!(err instanceof RefusalError)) {
      return `threw ${err}, want ${c.want}`;
    }
    got = err.code;
    why = ` (${err.message})`;
  }
  if (got !== c.want) {
    return `got ${got}${why}, want ${c.want}`;
  }
  if (got === "ok" && canonicalEncode(claims).toString("base64") !== c.canonical) {
    return "canonical bytes differ";
  }
  return "";
}

process.exitCode = main(process.argv.slice(2));
