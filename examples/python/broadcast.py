#!/usr/bin/env python3
"""Send one pushgate broadcast from Python and follow it to the end.

Python 3.9 or later, the standard library (urllib) and the `cryptography`
package for Ed25519 (Debian: apt-get install python3-cryptography; pip:
pip install cryptography):

  export PUSHGATE_URL=http://127.0.0.1:8080 PUSHGATE_KEY_ID=city-alerts PUSHGATE_KEY=city-alerts.key
  python3 broadcast.py --topic citizens --title "Flood warning" --body "Avoid Manggarai until 18:00."
  python3 broadcast.py --tokens devices.json --body "..."   # [{"platform":"fcm","token":"..."}]

It prints the broadcast id, polls the broadcast's status until it has ended,
and prints its final state and counters. Exit status: 0 when the broadcast
completed; 1 when the gateway refused a request (its problem code and detail
are printed) or could not be reached; 2 for a usage error; 3 when the
broadcast ended in another state (killed, cancelled, expired, recalled).

Every request is signed the way pushgate's Go client signs it: HTTP Message
Signatures (RFC 9421) with Ed25519, over a body bound by Content-Digest
(RFC 9530). sign_request below is the part to copy; the profile it follows
is described in docs/ARCHITECTURE.md, "Signing profile", and implemented by
signing/sign.go.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# ---------------------------------------------------------------------------
# Signing: the whole of pushgate's request-signing profile.


def sign_request(method, url, body, content_type, key_id, private_key):
    """Return the headers that sign one request.

    They are Host, Content-Digest (only with a body), Signature-Input and
    Signature. url is the full URL the request goes to, body the exact bytes
    sent (or None), and content_type the Content-Type sent with a body,
    which is signed too.
    """
    u = urllib.parse.urlsplit(url)
    headers = {}

    # The signature covers the method, the authority (host[:port]) and the
    # path. The authority is sent as the Host header, set here so that it is
    # exactly what was signed; it is signed lowercased. A query string, when
    # there is one, is covered as "@query".
    authority = u.netloc.lower()
    headers["Host"] = authority
    components = [
        ("@method", method.upper()),
        ("@authority", authority),
        ("@path", u.path or "/"),
    ]
    if u.query:
        components.append(("@query", "?" + u.query))

    # A body is bound by its SHA-256 digest in Content-Digest, and both that
    # field and Content-Type are covered.
    if body:
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        headers["Content-Digest"] = "sha-256=:%s:" % digest
        headers["Content-Type"] = content_type
        components.append(("content-digest", headers["Content-Digest"]))
        components.append(("content-type", content_type))

    # The signature parameters, in this order: created (Unix seconds; the
    # gateway allows 300 s of clock skew), keyid, alg, a fresh random nonce
    # (the gateway refuses a nonce it has seen: a captured request cannot
    # be replayed), and tag="pushgate", by which the gateway finds its
    # signature. An "expires" parameter is optional and honoured when
    # present.
    created = int(time.time())
    nonce = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")
    covered = " ".join('"%s"' % name for name, _ in components)
    params = '(%s);created=%d;keyid="%s";alg="ed25519";nonce="%s";tag="pushgate"' % (
        covered, created, key_id, nonce)

    # The signature base (RFC 9421 section 2.5): one line per covered
    # component, then the parameters; lines end with "\n", the last has
    # none.
    base = "".join('"%s": %s\n' % (name, value) for name, value in components)
    base += '"@signature-params": ' + params

    signature = base64.b64encode(private_key.sign(base.encode("utf-8"))).decode("ascii")

    # "pushgate" is the signature's label: any name would do, as long as
    # both fields use the same one.
    headers["Signature-Input"] = "pushgate=" + params
    headers["Signature"] = "pushgate=:%s:" % signature
    return headers


# ---------------------------------------------------------------------------
# Calling the API.


class ProblemError(Exception):
    """An error answer of the API.

    It is an RFC 9457 problem document with a stable, machine-readable code
    (such as bad_signature, topic_not_allowed or kill_switch_active) and a
    detail for people.
    """

    def __init__(self, status, problem, retry_after):
        self.status = status
        self.code = problem["code"]
        self.detail = problem.get("detail") or problem.get("title") or ""
        self.retry_after = retry_after  # the answer's Retry-After in seconds, or None
        super().__init__("%s: %s" % (self.code, self.detail))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses redirects: a signature covers one authority and path."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def call_api(gateway, key, method, path, payload=None):
    """Sign and send one request; return the decoded JSON answer and status.

    An error answer raises ProblemError. Each call signs afresh: a new nonce
    and created time for every request sent, a retry included.
    """
    url = gateway + path
    body = None
    if payload is not None:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    headers = {"Accept": "application/json, application/problem+json"}
    headers.update(sign_request(method, url, body, "application/json", key["id"], key["private"]))
    # The body sent must be exactly the bytes that were digested.
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _opener.open(req, timeout=60) as resp:
            text = resp.read()
            return (json.loads(text) if text else None), resp.status
    except urllib.error.HTTPError as err:
        text = err.read()
        media_type = (err.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type == "application/problem+json":
            problem = json.loads(text)
            if problem.get("code"):
                retry_after = err.headers.get("Retry-After")
                retry_after = int(retry_after) if retry_after and retry_after.isdigit() else None
                raise ProblemError(err.code, problem, retry_after) from None
        raise RuntimeError("the gateway answered HTTP %d without a problem document" % err.code) from None


def submit_broadcast(gateway, key, request):
    """Submit a broadcast: POST /v1/broadcasts, answered 202 when new.

    The idempotency key in the body makes a retry safe: the gateway answers
    a repeat of the same key and body with the first broadcast (200)
    instead of sending it twice. So a submission that got no answer, or
    "unavailable", or idempotency_conflict with a Retry-After (the first
    submission is still being stored), is sent again, signed afresh. An
    idempotency_conflict without Retry-After means the key was used with
    another body: that is final.
    """
    for attempt in range(1, 4):
        try:
            answer, _ = call_api(gateway, key, "POST", "/v1/broadcasts", request)
            return answer
        except (ProblemError, OSError) as err:
            # urllib raises an OSError (URLError, a timeout) when no
            # answer came.
            no_answer = isinstance(err, OSError)
            busy = isinstance(err, ProblemError) and (
                err.code == "unavailable" or err.code == "idempotency_conflict" and err.retry_after is not None)
            if not (no_answer or busy) or attempt == 3:
                raise
            print("submit: %s; trying again" % describe(err), file=sys.stderr)
            retry_after = err.retry_after if isinstance(err, ProblemError) else None
            time.sleep(min(retry_after if retry_after is not None else 2 * attempt, 30))


def finished(status):
    """Mirror the Go client's api.Status.Finished.

    A broadcast has ended when it has a finished_at and is not still
    recalling, or when it expired waiting for approvals.
    """
    return bool(status.get("finished_at")) and status["state"] != "recalling" or status["state"] == "expired"


def wait_broadcast(gateway, key, broadcast_id, poll_seconds, timeout_seconds):
    """Poll GET /v1/broadcasts/{id} until the broadcast has ended.

    The status route is signed like every route. A gateway answering
    "unavailable" (its Redis blinked) is asked again at the next poll; any
    other problem ends the wait. Returns the last status.
    """
    deadline = time.monotonic() + timeout_seconds
    path = "/v1/broadcasts/" + urllib.parse.quote(broadcast_id, safe="")
    last = ""
    while True:
        try:
            status, _ = call_api(gateway, key, "GET", path)
            if finished(status):
                return status
            c = status["counters"]
            line = "%s: %d sent, %d failed, %d expired of %d" % (
                status["state"], c["sent"], c["failed"] + c["invalid_token"], c["expired"], c["targeted"])
            if line != last:
                print("  " + line, flush=True)
                last = line
        except ProblemError as err:
            if err.code != "unavailable":
                raise
        if time.monotonic() > deadline:
            raise RuntimeError("broadcast %s has not ended after %ss (see its status: %s%s)" % (
                broadcast_id, timeout_seconds, gateway, path))
        time.sleep(poll_seconds)


def describe(err):
    """Say what went wrong; urllib keeps the reason of a URLError apart."""
    reason = getattr(err, "reason", None)
    return "%s" % (reason if reason is not None else err)


# ---------------------------------------------------------------------------
# The command line.


class UsageError(Exception):
    pass


def load_key(source):
    """Read the PKCS#8 PEM private key, as `pushgate keygen` writes it.

    source is a file name, or the PEM itself, which is how a secret often
    arrives in an environment variable.
    """
    if source.lstrip().startswith("-----BEGIN"):
        pem = source.encode("ascii")
    else:
        with open(source, "rb") as f:
            pem = f.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The message never quotes the key.
        raise UsageError("the key is not a PKCS#8 PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError("the key is %s, not Ed25519" % type(key).__name__)
    return key


def read_devices(file):
    """Read a tokens audience: [{"platform":"fcm","token":"..."}]."""
    with open(file, encoding="utf-8") as f:
        devices = json.load(f)
    if not isinstance(devices, list) or not devices:
        raise UsageError('%s: want a non-empty JSON array of {"platform", "token"}' % file)
    return devices


def parse_command_line(argv, env):
    p = argparse.ArgumentParser(prog="broadcast.py", description="Send a pushgate broadcast and follow it.")
    p.add_argument("--gateway", help="base URL of the pushgate API (default $PUSHGATE_URL)")
    p.add_argument("--key-id", help="the key's id in the gateway's keyring (default $PUSHGATE_KEY_ID)")
    p.add_argument("--key", help="PKCS#8 PEM file of the Ed25519 key, or the PEM itself (default $PUSHGATE_KEY)")
    p.add_argument("--topic", help="send to every device subscribed to this topic")
    p.add_argument("--tokens", help='send to the devices in this JSON file: [{"platform":"fcm","token":"..."}]')
    p.add_argument("--title", default="")
    p.add_argument("--body", help="the notification's text (required)")
    p.add_argument("--ttl", help="how long providers keep it for offline phones, such as 15m (default 1h)")
    p.add_argument("--idempotency-key", help="makes a repeated submission return the first broadcast")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between status reads")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the broadcast to end")
    a = p.parse_args(argv)

    gateway = (a.gateway or env.get("PUSHGATE_URL") or "http://127.0.0.1:8080").rstrip("/")
    key_id = a.key_id or env.get("PUSHGATE_KEY_ID") or ""
    key_source = a.key or env.get("PUSHGATE_KEY") or ""
    if not re.match(r"^https?://[^/]+", gateway):
        raise UsageError("--gateway %r: want an http or https URL" % gateway)
    # Key ids are letters, digits and . _ - (the keyring's rule), so they
    # need no escaping inside the quoted keyid parameter.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", key_id):
        raise UsageError("--key-id (or PUSHGATE_KEY_ID) is required: the key's id in the gateway's keyring")
    if not key_source:
        raise UsageError("--key (or PUSHGATE_KEY) is required: the PKCS#8 PEM file of the key")
    if (a.topic is None) == (a.tokens is None):
        raise UsageError("give exactly one of --topic and --tokens")
    if not a.body:
        raise UsageError("--body is required")
    if not (a.poll > 0 and a.timeout > 0):
        raise UsageError("--poll and --timeout are positive numbers of seconds")

    # The body of POST /v1/broadcasts (api.BroadcastRequest in the Go code).
    request = {
        # Without one, a random key still makes this run's retries safe.
        "idempotency_key": a.idempotency_key or "example-" + secrets.token_hex(12),
        "audience": {"topic": a.topic} if a.topic is not None else {"tokens": read_devices(a.tokens)},
        "message": {"title": a.title, "body": a.body},
    }
    if a.ttl is not None:
        request["message"]["ttl"] = a.ttl  # a Go duration such as "15m"; default 1h
    key = {"id": key_id, "private": load_key(key_source)}
    return gateway, key, request, a.poll, a.timeout


def main():
    try:
        gateway, key, request, poll, timeout = parse_command_line(sys.argv[1:], os.environ)
    except (UsageError, OSError, ValueError) as err:
        print("broadcast: %s" % err, file=sys.stderr)
        return 2
    try:
        sub = submit_broadcast(gateway, key, request)
        print("broadcast %s %s" % (sub["id"], sub["state"]))
        print("status: %s%s" % (gateway, sub["status_url"]), flush=True)

        status = wait_broadcast(gateway, key, sub["id"], poll, timeout)
        print("final state: " + status["state"])
        print("counters: " + " ".join("%s=%d" % kv for kv in status["counters"].items()))
        return 0 if status["state"] == "completed" else 3
    except ProblemError as err:
        print("broadcast: refused (HTTP %d): %s: %s" % (err.status, err.code, err.detail), file=sys.stderr)
    except (OSError, RuntimeError, ValueError) as err:
        print("broadcast: %s" % describe(err), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
