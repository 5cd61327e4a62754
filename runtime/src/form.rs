//! `application/x-www-form-urlencoded` bodies (what OAuth and OIDC endpoints receive: RFC 7009,
//! RFC 7662, back-channel logout), decoded without allocation beyond the value asked for.

/// The first value of `key` in an `application/x-www-form-urlencoded` body.
pub fn form_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == key).then(|| percent_decode(v)).flatten().filter(|v| !v.is_empty())
    })
}

/// Decodes `+` and `%XX` (form encoding); `None` for a broken escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode() {
        assert_eq!(
            form_value(b"token=a.b.c&token_type_hint=access_token", "token").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(form_value(b"x=1&token=a%2Eb+c", "token").as_deref(), Some("a.b c"));
        assert_eq!(form_value(b"token=", "token"), None);
        assert_eq!(form_value(b"token=%zz", "token"), None);
        assert_eq!(form_value(b"tok=1", "token"), None);
        assert_eq!(form_value(b"\xff", "token"), None);
    }
}
