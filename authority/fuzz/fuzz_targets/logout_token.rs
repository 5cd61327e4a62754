//! Any bytes as a back-channel logout request body: form decoding, the unverified peek at
//! `iss` and `kid`, and signature verification never panic, and nothing verifies without the
//! provider's private key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const JWKS: &str = r#"{"keys": [{"kty": "RSA", "key_ops": ["verify"], "n": "m6GQ9MMIDp1fuqfDF2mOm_CXT4dZWOI28AwwuL151ktU8XuJk_LeG6nbLiIClWXOclE6o0gm_CftgeUKt4l7pL8WGpfXD5h88Q8Us-_iyy29c1DP4nUt_v8rtjx8_rT39ct-3vGpcmk1Ws9Lw3TWBnoqYvIp4kDEiB6V78JCjyb9yN-HN85iUtGvmoIDcGm3bdy2YKz7KKQUNlEpRvDB2Vxofaa2MXzxiNTfd_MPbtehbfrPqjSoWZ7vpdNWTlxUG53F0u6deVL1SxNadJOXtyptNiqsictzZzfCCsqzHOnxdnJC69-b5TjTxMhxOvc9CnEFRDzaEjos3EzyLkEQ4Q", "e": "AQAB", "kid": "k1", "alg": "RS256"}]}"#;

fn keys() -> &'static revmesh_jwt::Keys {
    static K: OnceLock<revmesh_jwt::Keys> = OnceLock::new();
    K.get_or_init(|| revmesh_jwt::Keys::from_jwks(JWKS.as_bytes()).unwrap_or_else(|_| std::process::abort()))
}

fuzz_target!(|data: &[u8]| {
    let token = match revmesh_runtime::form::form_value(data, "logout_token") {
        Ok(Some(t)) => t,
        Ok(None) | Err(_) => String::from_utf8_lossy(data).into_owned(),
    };
    let _ = revmesh_jwt::unverified_issuer(&token);
    let _ = revmesh_jwt::unverified_kid(&token);
    assert!(keys().verify_signed(&token, 16 << 10).is_err(), "forged a signature");
});
