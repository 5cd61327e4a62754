"""Security Event Tokens (RFC 8417) minted by PyJWT as Shared Signals transmitters send them
(OpenID SSF 1.0 with CAEP 1.0 and RISC 1.0 events), plus hostile ones. Writes the transmitter's
JWKS to argv[1] and prints a JSON object of case name -> SET on stdout. argv[2] is the issuer,
argv[3] the audience, argv[4] now.
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

jwks_path, issuer, audience, now = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ALIAS = issuer.rstrip("/") + "/oauth2/default"
key = ec.generate_private_key(ec.SECP256R1())
other = ec.generate_private_key(ec.SECP256R1())
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": "t1", "use": "sig", "alg": "ES256"})
rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
rsa_jwk.update({"kid": "t2", "use": "sig", "alg": "RS256"})
with open(jwks_path, "w") as f:
    json.dump({"keys": [jwk, rsa_jwk]}, f)

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"


def user(sub):
    return {"format": "iss_sub", "iss": issuer, "sub": sub}


def claims(event, payload=None, sub_id=None, **over):
    c = {
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "jti": over.pop("jti", None) or f"set-{len(sets)}",
        "txn": "8675309",
        "events": {event: payload if payload is not None else {}},
    }
    if sub_id is not None:
        c["sub_id"] = sub_id
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(c, typ="secevent+jwt", signer=key, kid="t1", alg="ES256"):
    headers = {"kid": kid}
    if typ is not None:
        headers["typ"] = typ
    return jwt.encode(c, signer, algorithm=alg, headers=headers)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


sets = {}
# CAEP 1.0 §3.1, as its examples send it: a complex subject with the session and the user.
sets["session_revoked_complex"] = sign(claims(CAEP + "session-revoked", {"initiating_entity": "policy", "event_timestamp": now - 2},
    {"format": "complex", "session": {"format": "opaque", "id": "sess-A"}, "user": user("user-1"),
     "tenant": {"format": "opaque", "id": "123456789"}}))
# User only: every session of the user, up to the event.
sets["session_revoked_user"] = sign(claims(CAEP + "session-revoked", {"event_timestamp": now - 1}, user("user-2")))
sets["credential_change"] = sign(claims(CAEP + "credential-change",
    {"credential_type": "password", "change_type": "update", "event_timestamp": now - 3}, user("user-3")))
sets["credential_create"] = sign(claims(CAEP + "credential-change",
    {"credential_type": "fido2-roaming", "change_type": "create"}, user("user-4")))
# RISC 1.0; the older ones carry the subject inside the event (SSF 1.0 §3.1.1).
sets["account_disabled_in_event"] = sign(claims(RISC + "account-disabled",
    {"subject": {"format": "opaque", "id": "user-5"}, "reason": "hijacking"}), kid="t2", signer=rsa_key, alg="RS256")
sets["account_purged"] = sign(claims(RISC + "account-purged", {}, user("user-6")))
sets["credential_compromise"] = sign(claims(RISC + "credential-compromise",
    {"credential_type": "password"}, {"format": "iss_sub", "iss": ALIAS, "sub": "user-7"}))
sets["sessions_revoked"] = sign(claims(RISC + "sessions-revoked", {}, user("user-8")))
sets["jwt_id"] = sign(claims(CAEP + "session-revoked", {}, {"format": "jwt_id", "iss": issuer, "jti": "tok-9"}))
sets["aliases"] = sign(claims(RISC + "account-disabled", {},
    {"format": "aliases", "identifiers": [{"format": "email", "email": "u10@example.com"}, user("user-10")]}))
# Nothing stored.
sets["verification"] = sign(claims(SSF + "verification", {"state": "c3RhdGUtMQ"}, {"format": "opaque", "id": "stream-1"}))
sets["stream_updated"] = sign(claims(SSF + "stream-updated", {"status": "paused", "reason": "maintenance"},
    {"format": "opaque", "id": "stream-1"}))
sets["token_claims_change"] = sign(claims(CAEP + "token-claims-change", {"claims": {"role": "ro"}}, user("user-11")))
# Hostile: each is refused and stores nothing.
h = {}
h["alg_none"] = jwt.encode(claims(RISC + "account-disabled", {}, user("x")), None, algorithm="none",
    headers={"kid": "t1", "typ": "secevent+jwt"})
head = b64(json.dumps({"alg": "HS256", "typ": "secevent+jwt", "kid": "t1"}).encode())
body = b64(json.dumps(claims(RISC + "account-disabled", {}, user("x"))).encode())
h["hmac_with_public_key"] = f"{head}.{body}.{b64(hmac.new(public_pem, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"
h["other_key"] = sign(claims(RISC + "account-disabled", {}, user("x")), signer=other)
h["unknown_kid"] = sign(claims(RISC + "account-disabled", {}, user("x")), signer=other, kid="t-rotated")
h["wrong_typ"] = sign(claims(RISC + "account-disabled", {}, user("x")), typ="JWT")
h["logout_typ"] = sign(claims(RISC + "account-disabled", {}, user("x")), typ="logout+jwt")
h["wrong_aud"] = sign(claims(RISC + "account-disabled", {}, user("x"), aud="someone-else"))
h["unknown_issuer"] = sign(claims(RISC + "account-disabled", {}, user("x"), iss="https://evil.example/"))
h["two_events"] = sign(dict(claims(RISC + "account-disabled", {}, user("x")),
    events={RISC + "account-disabled": {}, RISC + "account-purged": {}}))
h["no_events"] = sign(dict(claims(RISC + "account-disabled", {}, user("x")), events={}))
h["too_old"] = sign(claims(RISC + "account-disabled", {}, user("x"), iat=now - 7200))
h["future"] = sign(claims(RISC + "account-disabled", {}, user("x"), iat=now + 3600))
h["no_jti"] = sign({k: v for k, v in claims(RISC + "account-disabled", {}, user("x")).items() if k != "jti"})
h["email_subject"] = sign(claims(RISC + "account-disabled", {}, {"format": "email", "email": "x@example.com"}))
h["no_subject"] = sign(claims(RISC + "account-disabled", {}))
h["foreign_iss_sub"] = sign(claims(RISC + "account-disabled", {}, {"format": "iss_sub", "iss": "https://other.example/", "sub": "x"}))
h["garbage"] = "this is not a SET"
sets["hostile"] = h
print(json.dumps(sets))
