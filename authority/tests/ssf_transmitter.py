"""An OpenID Shared Signals Framework 1.0 transmitter for the tests, written from the specs:
its own keys (ES256, PyJWT), `/.well-known/ssf-configuration`, stream creation and status
(SSF 1.0 §8), verification (§8.1.4), push delivery (RFC 8935) with the receiver's
`authorization_header`, and poll delivery (RFC 8936) with acknowledgements, `setErrs`,
`maxEvents`, `moreAvailable` and long polls.

Usage: ssf_transmitter.py JWKS_OUT MGMT_TOKEN AUDIENCE
Prints one line `{"port": N, "issuer": "..."}` once listening on 127.0.0.1.

Test-only control endpoints (no SSF meaning):
  POST /control/emit   {"event": URI, "payload": {...}, "sub_id": {...}, "count": N}
                       -> {"jtis": [...]}: signed and queued on every stream
  GET  /control/log    -> what happened: acked, setErrs, push answers, polls
"""
import json
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

jwks_out, mgmt_token, audience = sys.argv[1], sys.argv[2], sys.argv[3]
key = ec.generate_private_key(ec.SECP256R1())
jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": "tx-1", "use": "sig", "alg": "ES256"})
with open(jwks_out, "w") as f:
    json.dump({"keys": [jwk]}, f)

PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
SUPPORTED = [
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-purged",
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise",
    "https://schemas.openid.net/secevent/caep/event-type/token-claims-change",
    VERIFICATION,
    STREAM_UPDATED,
]

lock = threading.Condition()
streams = {}  # stream_id -> config
queues = {}  # stream_id -> list of (jti, set), unacknowledged, in order
log = {"acked": [], "set_errs": {}, "pushed": {}, "polls": 0, "delivered": {}}
issuer = None


def mint(event, payload, sub_id, stream_id):
    jti = secrets.token_hex(12)
    claims = {"iss": issuer, "aud": streams[stream_id]["aud"], "iat": int(time.time()), "jti": jti,
              "sub_id": sub_id, "events": {event: payload}}
    return jti, jwt.encode(claims, key, algorithm="ES256", headers={"kid": "tx-1", "typ": "secevent+jwt"})


def enqueue(stream_id, event, payload, sub_id):
    jti, s = mint(event, payload, sub_id, stream_id)
    queues[stream_id].append((jti, s))
    lock.notify_all()
    return jti


def pusher(stream_id):
    """Delivers a push stream's queue in order (RFC 8935 §2), retrying what was not answered 202/400."""
    while True:
        with lock:
            while not queues[stream_id]:
                lock.wait()
            jti, s = queues[stream_id][0]
            d = streams[stream_id]["delivery"]
        req = urllib.request.Request(d["endpoint_url"], data=s.encode(), method="POST",
                                     headers={"Content-Type": "application/secevent+jwt",
                                              "Accept": "application/json",
                                              "Authorization": d.get("authorization_header", "")})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError:
            time.sleep(0.2)
            continue
        with lock:
            log["pushed"].setdefault(jti, []).append(status)
            if status in (202, 400):
                queues[stream_id].pop(0)
                if status == 202:
                    log["acked"].append(jti)
                else:
                    log["set_errs"][jti] = json.loads(body or b"{}")
            lock.notify_all()
        if status not in (202, 400):
            time.sleep(0.2)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def authorized(self):
        if self.headers.get("Authorization") != f"Bearer {mgmt_token}":
            self.reply(401, {"err": "authentication_failed"})
            return False
        return True

    def do_GET(self):
        base = issuer
        path, _, query = self.path.partition("?")
        args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path == "/.well-known/ssf-configuration":
            return self.reply(200, {
                "spec_version": "1_0",
                "issuer": issuer,
                "jwks_uri": base + "/jwks.json",
                "delivery_methods_supported": [PUSH, POLL],
                "configuration_endpoint": base + "/ssf/streams",
                "status_endpoint": base + "/ssf/status",
                "verification_endpoint": base + "/ssf/verify",
                "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
            })
        if path == "/jwks.json":
            return self.reply(200, {"keys": [jwk]})
        if path == "/control/log":
            with lock:
                return self.reply(200, {**log, "pending": {k: len(v) for k, v in queues.items()}})
        if not self.authorized():
            return
        if path == "/ssf/streams":
            with lock:
                s = streams.get(args.get("stream_id"))
            return self.reply(200, s) if s else self.reply(404, {"err": "not_found"})
        if path == "/ssf/status":
            with lock:
                s = streams.get(args.get("stream_id"))
            return self.reply(200, {"stream_id": s["stream_id"], "status": s["status"]}) if s else self.reply(404)
        self.reply(404)

    def do_POST(self):
        if self.path == "/control/emit":
            b = self.body()
            with lock:
                jtis = [enqueue(sid, b["event"], b.get("payload", {}), b["sub_id"])
                        for _ in range(b.get("count", 1)) for sid in streams]
            return self.reply(200, {"jtis": jtis})
        if not self.authorized():
            return
        if self.path == "/ssf/streams":
            b = self.body()
            d = b.get("delivery", {})
            if d.get("method") not in (PUSH, POLL) or (d["method"] == PUSH and not d.get("endpoint_url")):
                return self.reply(400, {"err": "invalid_request"})
            sid = secrets.token_hex(8)
            if d["method"] == POLL:
                d = {"method": POLL, "endpoint_url": f"{issuer}/ssf/poll/{sid}"}
            requested = b.get("events_requested", [])
            config = {"stream_id": sid, "iss": issuer, "aud": audience, "delivery": d,
                      "events_supported": SUPPORTED, "events_requested": requested,
                      "events_delivered": [e for e in requested if e in SUPPORTED],
                      "min_verification_interval": 0, "status": "enabled",
                      "description": b.get("description")}
            with lock:
                streams[sid] = config
                queues[sid] = []
            if d["method"] == PUSH:
                threading.Thread(target=pusher, args=(sid,), daemon=True).start()
            shown = {k: v for k, v in config.items() if k != "status"}
            return self.reply(201, shown)
        if self.path == "/ssf/verify":
            b = self.body()
            with lock:
                if b.get("stream_id") not in streams:
                    return self.reply(404, {"err": "not_found"})
                payload = {"state": b["state"]} if "state" in b else {}
                enqueue(b["stream_id"], VERIFICATION, payload, {"format": "opaque", "id": b["stream_id"]})
            return self.reply(204)
        if self.path.startswith("/ssf/poll/"):
            sid = self.path.rsplit("/", 1)[1]
            b = self.body()
            deadline = time.time() + 5
            with lock:
                if sid not in streams:
                    return self.reply(404, {"err": "not_found"})
                log["polls"] += 1
                acked = set(b.get("ack", []))
                log["acked"].extend(j for j, _ in queues[sid] if j in acked)
                errs = b.get("setErrs", {})
                log["set_errs"].update(errs)
                queues[sid] = [(j, s) for j, s in queues[sid] if j not in acked and j not in errs]
                limit = int(b.get("maxEvents", 10))
                while not queues[sid] and not b.get("returnImmediately") and limit > 0:
                    left = deadline - time.time()
                    if left <= 0:
                        break
                    lock.wait(left)
                batch = queues[sid][:limit]
                for j, _ in batch:
                    log["delivered"][j] = log["delivered"].get(j, 0) + 1
                more = len(queues[sid]) > len(batch)
            return self.reply(200, {"sets": {j: s for j, s in batch}, "moreAvailable": more})
        self.reply(404)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
issuer = f"http://127.0.0.1:{server.server_address[1]}"
print(json.dumps({"port": server.server_address[1], "issuer": issuer}), flush=True)
server.serve_forever()
