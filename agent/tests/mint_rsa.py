"""An RSA signing key as an identity provider publishes it, and access tokens signed with it
(PyJWT). Usage: mint_rsa.py KID NOW; prints {"jwk": …, "token": …, "random_kids": [...]}:
`token` is signed with the key under KID, `random_kids` are 20 tokens signed with the same key
but naming kids nobody publishes."""
import json
import secrets
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

kid, now = sys.argv[1], int(sys.argv[2])
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})


def token(k, jti):
    claims = {"sub": "alice", "jti": jti, "iat": now, "exp": now + 3600, "iss": "https://idp.example"}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": k})


print(json.dumps({
    "jwk": jwk,
    "token": token(kid, f"t-{kid}"),
    "random_kids": [token(secrets.token_hex(8), f"r-{i}") for i in range(20)],
}))
