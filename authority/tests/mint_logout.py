"""Logout tokens minted by PyJWT, shaped as identity providers send them (OIDC Back-Channel
Logout 1.0), plus hostile ones. Writes the provider's JWKS to argv[1] and prints a JSON object
of case name -> token on stdout. argv[2] is the issuer, argv[3] the audience, argv[4] now.
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

jwks_path, issuer, audience, now = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
KID = sys.argv[5] if len(sys.argv) > 5 else "k1"
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
with open(jwks_path, "w") as f:
    json.dump({"keys": [jwk]}, f)

EVENT = {"http://schemas.openid.net/event/backchannel-logout": {}}


def claims(**over):
    c = {"iss": issuer, "aud": audience, "iat": now, "jti": over.pop("jti", None) or f"j-{KID}-{len(tokens)}", "events": EVENT}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(c, typ="logout+jwt", signer=key, kid=KID, alg="RS256"):
    headers = {"kid": kid}
    if typ is not None:
        headers["typ"] = typ
    return jwt.encode(c, signer, algorithm=alg, headers=headers)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


tokens = {}
# As providers send them.
tokens["keycloak"] = sign(claims(sid="kc-session-1", sub="user-1", aud=[audience, "account"]))
tokens["keycloak_2023"] = sign(claims(sid="kc-session-2", sub="user-2"), typ="JWT")
tokens["auth0"] = sign(claims(sid="a0-session", sub="auth0|abc"), typ=None)
tokens["hydra"] = sign(claims(sid="hydra-session", exp=now + 600))
tokens["sub_only"] = sign(claims(sub="user-3"))
# Hostile.
tokens["wrong_issuer"] = sign(claims(sid="x", iss="https://evil.example"))
tokens["wrong_audience"] = sign(claims(sid="x", aud="someone-else"))
tokens["nonce"] = sign(claims(sid="x", nonce="n-1"))
tokens["no_events"] = sign(claims(sid="x", events=None))
tokens["wrong_event"] = sign(claims(sid="x", events={"http://schemas.openid.net/event/backchannel-logout": "yes"}))
tokens["other_key"] = sign(claims(sid="x"), signer=other)
tokens["unknown_kid"] = sign(claims(sid="x"), signer=other, kid="k-rotated")
tokens["expired"] = sign(claims(sid="x", iat=now - 100, exp=now - 60))
tokens["too_old"] = sign(claims(sid="x", iat=now - 3600))
tokens["future"] = sign(claims(sid="x", iat=now + 3600))
tokens["no_jti"] = sign({k: v for k, v in claims(sid="x").items() if k != "jti"})
tokens["no_subject"] = sign(claims())
tokens["access_token_type"] = sign(claims(sid="x"), typ="at+jwt")
tokens["alg_none"] = jwt.encode(claims(sid="x"), None, algorithm="none", headers={"kid": "k1", "typ": "logout+jwt"})
# HMAC "signed" with the provider's public key, the classic key-confusion attack.
head = b64(json.dumps({"alg": "HS256", "typ": "logout+jwt", "kid": "k1"}).encode())
body = b64(json.dumps(claims(sid="x")).encode())
mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
tokens["hmac_with_public_key"] = f"{head}.{body}.{b64(mac)}"
print(json.dumps(tokens))
