//! `application/x-www-form-urlencoded` bodies (what OAuth and OIDC endpoints receive: RFC 7009,
//! RFC 7662, back-channel logout), decoded by `form_urlencoded` (the WHATWG parser the `url`
//! crate uses), with one rule of our own: a parameter we read may appear once.

/// Why a form body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The parameter appears more than once: RFC 6749 section 3.1 says request parameters
    /// MUST NOT be included more than once, and two copies are two readings of one request.
    #[error("form parameter `{0}` appears more than once")]
    Repeated(String),
}

/// The value of `key` in an `application/x-www-form-urlencoded` body: `Ok(None)` when it is
/// absent or empty, `Err` when it appears more than once. Bytes that are not UTF-8 decode to
/// U+FFFD (a token holding one verifies as nothing).
pub fn form_value(body: &[u8], key: &str) -> Result<Option<String>, FormError> {
    let mut found = None;
    for (k, v) in form_urlencoded::parse(body) {
        if k == key && found.replace(v).is_some() {
            return Err(FormError::Repeated(key.to_owned()));
        }
    }
    Ok(found.filter(|v| !v.is_empty()).map(|v| v.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode() {
        let one = |body: &[u8]| form_value(body, "token");
        assert_eq!(one(b"token=a.b.c&token_type_hint=access_token"), Ok(Some("a.b.c".into())));
        assert_eq!(one(b"x=1&token=a%2Eb+c"), Ok(Some("a.b c".into())));
        assert_eq!(one(b"t%6Fken=a.b.c"), Ok(Some("a.b.c".into())), "the name is decoded too");
        assert_eq!(one(b"token="), Ok(None));
        assert_eq!(one(b"tok=1"), Ok(None));
        assert_eq!(one(b"token=a&token=b"), Err(FormError::Repeated("token".into())));
        assert_eq!(one(b"token=a&t%6Fken=b"), Err(FormError::Repeated("token".into())));
    }

    // The hand-written decoder read `%+A` as 0x0A (a sign is accepted by `from_str_radix`), so
    // it and the application behind it could see different bytes. WHATWG leaves an escape that
    // is not two hex digits as it is.
    #[test]
    fn escapes_are_two_hex_digits_or_literal() {
        assert_eq!(form_value(b"token=a%+Ab", "token"), Ok(Some("a% Ab".into())), "`+` is a space");
        assert_eq!(form_value(b"token=%zz", "token"), Ok(Some("%zz".into())));
        assert_eq!(form_value(b"token=%0A", "token"), Ok(Some("\n".into())));
    }
}
