//! Cross-site request forgery protection, the Rails way: each session holds a random token;
//! pages embed it masked with a fresh one-time pad (so compressed pages never repeat the same
//! secret bytes, which defeats BREACH-style attacks), and every non-GET request must send it back
//! in the `authenticity_token` field or the `X-CSRF-Token` header.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use subtle::ConstantTimeEq;

pub const TOKEN_LEN: usize = 32;

/// The name of the form field that carries the token.
pub const PARAM: &str = "authenticity_token";

/// A fresh random session token.
pub fn new_token() -> [u8; TOKEN_LEN] {
    rand::random()
}

/// The session token masked with a one-time pad, for one page.
pub fn masked(token: &[u8; TOKEN_LEN]) -> String {
    let pad: [u8; TOKEN_LEN] = rand::random();
    let mut out = Vec::with_capacity(TOKEN_LEN * 2);
    out.extend_from_slice(&pad);
    out.extend(pad.iter().zip(token).map(|(p, t)| p ^ t));
    B64.encode(out)
}

/// Whether `sent` (a masked token from a form or header) matches the session's token.
pub fn verify(token: &[u8; TOKEN_LEN], sent: &str) -> bool {
    let Ok(raw) = B64.decode(sent.trim()) else {
        return false;
    };
    if raw.len() != TOKEN_LEN * 2 {
        return false;
    }
    let (pad, xored) = raw.split_at(TOKEN_LEN);
    let unmasked: Vec<u8> = pad.iter().zip(xored).map(|(p, x)| p ^ x).collect();
    unmasked.ct_eq(token).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_masking_differs_and_each_verifies() {
        let token = new_token();
        let (a, b) = (masked(&token), masked(&token));
        assert_ne!(a, b);
        assert!(verify(&token, &a));
        assert!(verify(&token, &b));
    }

    #[test]
    fn another_sessions_token_or_garbage_does_not_verify() {
        let token = new_token();
        assert!(!verify(&new_token(), &masked(&token)));
        assert!(!verify(&token, ""));
        assert!(!verify(&token, "not base64 !"));
        assert!(!verify(&token, &B64.encode(token)));
    }
}
