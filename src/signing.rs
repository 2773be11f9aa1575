//! Tamper-proof tokens in the shape Rails' `MessageVerifier` uses: `base64(data)--base64(mac)`,
//! with an HMAC-SHA256 under a key derived from the app secret and a purpose, so a token signed
//! for one use (a session cookie) is worthless for another (a stream name). During a secret
//! rotation the previous secrets still verify (never sign), so nobody is signed out and no open
//! page loses its stream.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of an encoded tag: 32 bytes of HMAC-SHA256 in unpadded base64.
const TAG_LEN: usize = 43;

/// Signs and verifies tokens for one purpose.
#[derive(Clone)]
pub struct Verifier {
    key: [u8; 32],
    /// Keys from previous secrets: accepted, never used to sign.
    previous: Vec<[u8; 32]>,
}

/// How a token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub data: Vec<u8>,
    /// Signed with a previous secret: worth signing again with the current one.
    pub stale: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// A verifier whose key is derived from `secret` for `purpose`.
    pub fn new(secret: &str, purpose: &str) -> Self {
        Self::rotating(secret, &[], purpose)
    }

    /// Like [`new`](Self::new), also accepting tokens signed under any of `previous`.
    pub fn rotating(secret: &str, previous: &[String], purpose: &str) -> Self {
        Self {
            key: derive(secret, purpose),
            previous: previous.iter().map(|old| derive(old, purpose)).collect(),
        }
    }

    /// `data` in a form that can be handed out and later verified.
    pub fn sign(&self, data: &[u8]) -> String {
        let encoded = B64.encode(data);
        let mut mac = mac(&self.key);
        mac.update(encoded.as_bytes());
        let tag = B64.encode(mac.finalize().into_bytes());
        format!("{encoded}--{tag}")
    }

    /// The data a token was signed with, or `None` if it was altered, forged or malformed.
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        self.verify_rotating(token).map(|verified| verified.data)
    }

    /// [`verify`](Self::verify), also saying whether the token was signed with a previous
    /// secret.
    pub fn verify_rotating(&self, token: &str) -> Option<Verified> {
        // The tag has a fixed length; splitting by position rather than at the last "--" keeps
        // URL-safe base64, whose alphabet includes '-', unambiguous.
        let bytes = token.as_bytes();
        let split = bytes.len().checked_sub(TAG_LEN + 2)?;
        let (encoded, rest) = bytes.split_at(split);
        let tag = B64.decode(rest.strip_prefix(b"--")?).ok()?;
        let signed_with = |key: &[u8; 32]| {
            let mut mac = mac(key);
            mac.update(encoded);
            mac.verify_slice(&tag).is_ok()
        };
        let stale = if signed_with(&self.key) {
            false
        } else if self.previous.iter().any(signed_with) {
            true
        } else {
            return None;
        };
        Some(Verified {
            data: B64.decode(encoded).ok()?,
            stale,
        })
    }
}

/// The key for `purpose` under `secret`.
fn derive(secret: &str, purpose: &str) -> [u8; 32] {
    let mut mac = mac(secret.as_bytes());
    mac.update(b"tasksync/");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_token_verifies_to_its_data() {
        let v = Verifier::new(SECRET, "session");
        assert_eq!(v.verify(&v.sign(b"hello")).unwrap(), b"hello");
    }

    #[test]
    fn tokens_whose_base64_holds_dashes_still_verify() {
        let v = Verifier::new(SECRET, "session");
        // Enough varied inputs that data and tags start and end with '-' many times over.
        for i in 0..2000u32 {
            let data = i.to_be_bytes().repeat((i % 7) as usize + 1);
            assert_eq!(v.verify(&v.sign(&data)).as_deref(), Some(&data[..]), "{i}");
        }
    }

    #[test]
    fn non_ascii_garbage_is_refused_without_panicking() {
        let v = Verifier::new(SECRET, "session");
        assert_eq!(v.verify(&"é".repeat(40)), None);
        assert_eq!(v.verify(&format!("x--{}", "é".repeat(30))), None);
    }

    #[test]
    fn during_a_rotation_old_tokens_verify_as_stale_and_new_ones_use_the_new_secret() {
        let old = Verifier::new(SECRET, "session");
        let new_secret = "fedcba9876543210fedcba9876543210";
        let rotating = Verifier::rotating(new_secret, &[SECRET.to_owned()], "session");
        let from_before = old.sign(b"ada");
        assert_eq!(
            rotating.verify_rotating(&from_before),
            Some(Verified {
                data: b"ada".to_vec(),
                stale: true
            })
        );
        let fresh = rotating.sign(b"ada");
        assert_eq!(
            rotating.verify_rotating(&fresh).map(|v| v.stale),
            Some(false)
        );
        assert_eq!(old.verify(&fresh), None, "signed with the new secret only");
        let other_purpose = Verifier::new(SECRET, "stream").sign(b"ada");
        assert_eq!(rotating.verify(&other_purpose), None);
    }

    #[test]
    fn altered_tokens_are_refused() {
        let v = Verifier::new(SECRET, "session");
        let token = v.sign(b"{\"user\":1}");
        let (data, tag) = token.split_once("--").unwrap();
        let forged = format!("{}--{tag}", B64.encode(b"{\"user\":2}"));
        assert_eq!(v.verify(&forged), None);
        assert_eq!(v.verify(&format!("{data}--AAAA")), None);
        assert_eq!(v.verify(data), None);
        assert_eq!(v.verify(""), None);
        assert_eq!(v.verify("--"), None);
    }

    #[test]
    fn a_token_signed_for_one_purpose_or_secret_fails_for_another() {
        let session = Verifier::new(SECRET, "session");
        let stream = Verifier::new(SECRET, "stream");
        let other = Verifier::new("fedcba9876543210fedcba9876543210", "session");
        let token = session.sign(b"x");
        assert_eq!(stream.verify(&token), None);
        assert_eq!(other.verify(&token), None);
    }
}
