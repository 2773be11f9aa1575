//! Signed stream names. A room page hands its socket a signed name for the room's stream; the
//! cable subscribes only to names it signed, so no one can listen to a room they could not see.

use crate::{models::RoomId, signing::Verifier};

#[derive(Clone, Debug)]
pub struct StreamSigner {
    verifier: Verifier,
}

impl StreamSigner {
    pub fn new(secret: &str) -> Self {
        Self::rotating(secret, &[])
    }

    /// Like [`new`](Self::new), also accepting names signed under any of `previous`, so pages
    /// rendered before a secret rotation keep their streams.
    pub fn rotating(secret: &str, previous: &[String]) -> Self {
        Self {
            verifier: Verifier::rotating(secret, previous, "turbo/signed_stream_name"),
        }
    }

    pub fn sign(&self, stream: &str) -> String {
        self.verifier.sign(stream.as_bytes())
    }

    /// The stream a signed name stands for, if we signed it and it names a stream we serve.
    pub fn verify(&self, signed: &str) -> Option<String> {
        let stream = String::from_utf8(self.verifier.verify(signed)?).ok()?;
        is_known_stream(&stream).then_some(stream)
    }
}

/// Streams are `rooms:<id>`; nothing else is ever signed, but a check costs nothing.
fn is_known_stream(stream: &str) -> bool {
    stream
        .strip_prefix("rooms:")
        .and_then(RoomId::parse)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_room_stream_verifies() {
        let signer = StreamSigner::new(SECRET);
        assert_eq!(
            signer.verify(&signer.sign("rooms:7")).as_deref(),
            Some("rooms:7")
        );
    }

    #[test]
    fn forged_altered_and_unknown_names_are_rejected() {
        let signer = StreamSigner::new(SECRET);
        let signed = signer.sign("rooms:7");
        let other_room = signer.sign("rooms:8");
        let spliced = format!(
            "{}{}",
            &other_room[..other_room.find("--").unwrap()],
            &signed[signed.find("--").unwrap()..]
        );
        assert_eq!(signer.verify(&spliced), None);
        assert_eq!(signer.verify("cm9vbXM6Nw--forged"), None);
        assert_eq!(signer.verify(&signer.sign("admin")), None);
        assert_eq!(signer.verify(&signer.sign("rooms:0")), None);
        let other_secret = StreamSigner::new("fedcba9876543210fedcba9876543210");
        assert_eq!(other_secret.verify(&signed), None);
    }
}
