//! Request headers that do not hold on to their connection's read buffer.
//!
//! actix-http parses a request's header values as slices of the connection's 8 KiB read
//! buffer, and keeps request heads for reuse after their responses (a pool of 128 requests per
//! application instance and 128 heads per worker thread), headers and all. A kept head therefore
//! keeps the whole buffer it was read from, long after its connection has gone: for a WebSocket
//! handshake, one request on its connection, that is 8 KiB a handshake, and with the head's own
//! map (sized for 16 headers, about 6.7 KB) several megabytes after a burst of handshakes.
//! [`detach`] gives each value its own copy, in a map sized to the request, before the request
//! reaches the application; the buffer is then released when its connection closes.

use actix_http::header::{HeaderMap, HeaderValue};

/// Replaces `headers` with a map of the same names and values that shares no memory with the
/// buffer they were parsed from.
pub fn detach(headers: &mut HeaderMap) {
    let mut own = HeaderMap::with_capacity(headers.len_keys());
    for (name, value) in headers.iter() {
        own.append(name.clone(), copied(value));
    }
    *headers = own;
}

fn copied(value: &HeaderValue) -> HeaderValue {
    // A value that was parsed is valid, so the copy is too; should it somehow not be, the
    // original (still sharing its buffer) is kept rather than a header lost.
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(mut copy) => {
            copy.set_sensitive(value.is_sensitive());
            copy
        }
        Err(_) => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use actix_http::header::{COOKIE, HOST, HeaderName};
    use bytes::Bytes;

    use super::*;

    #[test]
    fn values_no_longer_share_the_buffer_they_were_read_from() {
        let text = "example.test:3000|session=abc; theme=dark|x-one|x-two";
        let buffer = Bytes::from(text.as_bytes().to_vec());
        let slice = |part: &str| {
            let start = text.find(part).expect("part of the text");
            HeaderValue::from_maybe_shared(buffer.slice(start..start + part.len()))
                .expect("a valid value")
        };
        let mut headers = HeaderMap::new();
        headers.insert(HOST, slice("example.test:3000"));
        let mut cookie = slice("session=abc; theme=dark");
        cookie.set_sensitive(true);
        headers.insert(COOKIE, cookie);
        let custom = HeaderName::from_static("x-list");
        headers.append(custom.clone(), slice("x-one"));
        headers.append(custom.clone(), slice("x-two"));
        assert!(!buffer.is_unique(), "the values share the buffer before");

        detach(&mut headers);

        assert!(buffer.is_unique(), "no value shares the buffer after");
        assert_eq!(headers.get(HOST).unwrap(), "example.test:3000");
        assert_eq!(headers.get(COOKIE).unwrap(), "session=abc; theme=dark");
        assert!(headers.get(COOKIE).unwrap().is_sensitive());
        assert!(!headers.get(HOST).unwrap().is_sensitive());
        let list: Vec<_> = headers.get_all(&custom).collect();
        assert_eq!(list, ["x-one", "x-two"]);
        assert_eq!(headers.len(), 4);
    }
}
