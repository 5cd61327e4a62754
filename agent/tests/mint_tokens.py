"""Mints keys and tokens with PyJWT and `cryptography` (an implementation independent of ours)
for the agent's verification tests. Usage: python3 mint_tokens.py OUT_DIR
Writes the key files and tokens.json: [{"name", "token", "expect", "keys"}]."""
import base64, hashlib, hmac, json, os, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

out = sys.argv[1]
now = int(time.time())


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def pub_pem(k):
    return k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


# A binary secret whose last byte is a newline, written as docs/operations.md says such a secret is
# written: followed by one more newline, which the agent strips. A random secret written bare
# ended in a newline byte 1 time in 256 and then every HMAC case failed.
secret = os.urandom(63) + b"\n"
write("hs.secret", secret + b"\n")
rsa_k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_k = ec.generate_private_key(ec.SECP256R1())
ec384_k = ec.generate_private_key(ec.SECP384R1())
ed_k = ed25519.Ed25519PrivateKey.generate()
jwk_k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
write("rsa.pem", pub_pem(rsa_k))
write("ec.pem", pub_pem(ec_k))
write("ec384.pem", pub_pem(ec384_k))
write("ed.pem", pub_pem(ed_k))
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(jwk_k.public_key()))
jwk["kid"] = "jwk-1"
write("jwks.json", json.dumps({"keys": [jwk]}).encode())

claims = {"sub": "alice", "jti": "j-1", "iat": now, "exp": now + 600, "iss": "https://issuer", "aud": "svc", "sid": "s-1"}
tokens = []


def add(name, token, expect, keys="all"):
    tokens.append({"name": name, "token": token, "expect": expect, "keys": keys})


def hs(header_json, payload_json, key=secret, digest=hashlib.sha256):
    signing = b64(header_json.encode()) + "." + b64(payload_json.encode())
    return signing + "." + b64(hmac.new(key, signing.encode(), digest).digest())


def with_claims(**kw):
    c = dict(claims)
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


# Valid tokens, one per algorithm family.
for alg in ["HS256", "HS384", "HS512"]:
    add(f"valid {alg}", jwt.encode(claims, secret, algorithm=alg), "ok")
for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]:
    add(f"valid {alg}", jwt.encode(claims, rsa_k, algorithm=alg), "ok")
add("valid ES256", jwt.encode(claims, ec_k, algorithm="ES256"), "ok")
add("valid ES384", jwt.encode(claims, ec384_k, algorithm="ES384"), "ok")
add("valid EdDSA", jwt.encode(claims, ed_k, algorithm="EdDSA"), "ok")
add("valid JWKS by kid", jwt.encode(claims, jwk_k, algorithm="RS256", headers={"kid": "jwk-1"}), "ok")
add("valid aud list", jwt.encode(with_claims(aud=["other", "svc"]), secret, algorithm="HS256"), "ok")

payload = json.dumps(claims)
for none in ["none", "None", "NONE"]:
    add(f"alg {none}", b64(json.dumps({"alg": none}).encode()) + "." + b64(payload.encode()) + ".", "algorithm")
pem_as_secret = hs('{"alg":"HS256","typ":"JWT"}', payload, key=pub_pem(rsa_k))
add("HS256 keyed with the RSA public PEM", pem_as_secret, "algorithm", keys="rsa_only")
add("HS256 keyed with the RSA public PEM (HMAC key present)", pem_as_secret, "signature")
add("unknown crit", hs('{"alg":"HS256","crit":["x-custom"],"x-custom":1}', payload), "malformed")
add("iss of the wrong type", hs('{"alg":"HS256"}', json.dumps(with_claims(iss=5))), "claims")
add("aud of the wrong type", hs('{"alg":"HS256"}', json.dumps(with_claims(aud={"a": 1}))), "claims")
add("exp as a string", hs('{"alg":"HS256"}', json.dumps(with_claims(exp=str(now + 600)))), "claims")
add("exp negative", hs('{"alg":"HS256"}', json.dumps(with_claims(exp=-5))), "claims")
add("exp huge", hs('{"alg":"HS256"}', json.dumps(with_claims(exp=10**30))), "claims")
add("exp missing", hs('{"alg":"HS256"}', json.dumps(with_claims(exp=None))), "claims")
add("expired", jwt.encode(with_claims(exp=now - 3600, iat=now - 7200), secret, algorithm="HS256"), "expired")
add("nbf in the future", jwt.encode(with_claims(nbf=now + 3600), secret, algorithm="HS256"), "not_yet_valid")
add("iat in the future", jwt.encode(with_claims(iat=now + 3600), secret, algorithm="HS256"), "not_yet_valid")
add("wrong issuer", jwt.encode(with_claims(iss="https://evil"), secret, algorithm="HS256"), "issuer")
add("wrong audience", jwt.encode(with_claims(aud="other"), secret, algorithm="HS256"), "audience")
dup = '{"sub":"alice","sub":"mallory","jti":"j-1","exp":%d,"iss":"https://issuer","aud":"svc"}' % (now + 600)
add("duplicate claim keys", hs('{"alg":"HS256"}', dup), "malformed")
good = jwt.encode(claims, secret, algorithm="HS256")
h, p, s = good.split(".")
add("padded base64", h + "==." + p + "." + s, "malformed")
i = 0
while True:
    t = jwt.encode(with_claims(jti=f"pad-{i}"), secret, algorithm="HS256")
    if "-" in t or "_" in t:
        break
    i += 1
add("standard-alphabet base64", t.replace("-", "+").replace("_", "/"), "malformed")
add("four segments", good + ".AAAA", "malformed")
add("two segments", h + "." + p, "malformed")
add("too large", jwt.encode(with_claims(pad="x" * 9000), secret, algorithm="HS256"), "too_large")
add("unknown kid", jwt.encode(claims, jwk_k, algorithm="RS256", headers={"kid": "nope"}), "unknown_key", keys="jwks_only")
es_zero = b64(b'{"alg":"ES256"}') + "." + b64(payload.encode()) + "." + b64(bytes(64))
add("ES256 with r=s=0", es_zero, "signature")
add("signed by another key", jwt.encode(claims, os.urandom(64), algorithm="HS256"), "signature")
add("RS256 signed by the JWKS key without kid", jwt.encode(claims, jwk_k, algorithm="RS256"), "signature")
add("garbage", "not-a-token", "malformed")

write("tokens.json", json.dumps(tokens).encode())
