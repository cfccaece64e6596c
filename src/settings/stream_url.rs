//! A stream address that may carry credentials (`rtsp://user:pass@camera/stream`): the
//! real text goes only to the program that opens the stream ([`StreamUrl::expose`]);
//! everything people read — logs, errors, the status message, `print-config` — gets the
//! redacted form, where the user and password are `***`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What replaces `user:password` in the text people read.
pub const REDACTED: &str = "***";

/// An `rtsp://` (or `rtsps://`) address as written in the settings. `Display` and `Debug`
/// redact its credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamUrl(String);

impl StreamUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The address with its credentials, for the program that opens the stream only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The scheme, lower case (`rtsp`), when the address has one.
    pub fn scheme(&self) -> Option<String> {
        let (scheme, _) = self.0.split_once("://")?;
        Some(scheme.to_ascii_lowercase()).filter(|s| !s.is_empty())
    }

    /// The password in the address, as written and percent-decoded (both may show up in
    /// an error message of the program reading the stream).
    fn passwords(&self) -> Vec<String> {
        let Some((_, rest)) = self.0.split_once("://") else {
            return Vec::new();
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let Some((userinfo, _)) = authority.rsplit_once('@') else {
            return Vec::new();
        };
        let Some((_, password)) = userinfo.split_once(':') else {
            return Vec::new();
        };
        let mut out = vec![password.to_string(), percent_decode(password)];
        out.retain(|p| !p.is_empty());
        out.dedup();
        out
    }

    /// `text` (e.g. what ffmpeg printed) with every URL's credentials and this address's
    /// password replaced by [`REDACTED`] (a password shorter than 4 characters only inside
    /// its URL: replacing it everywhere would garble the text and hide little).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = redact(text);
        for p in self.passwords().iter().filter(|p| p.chars().count() >= 4) {
            out = out.replace(p.as_str(), REDACTED);
        }
        out
    }
}

impl fmt::Display for StreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for StreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamUrl({:?})", redact(&self.0))
    }
}

/// `text` with the credentials of every `scheme://user:pass@host` in it replaced by
/// [`REDACTED`] (`rtsp://***@host`). The user goes too: on many cameras it is `admin`,
/// half of the secret.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the path, query, fragment or the end of the URL.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str(REDACTED);
                out.push_str(&tail[userinfo_end..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `%XX` escapes decoded (invalid escapes and non-UTF-8 results are left as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_in_display_debug_and_any_text() {
        let url = StreamUrl::new("rtsp://admin:p%40ss:w0rd@192.168.1.20:554/stream1?ch=1");
        assert_eq!(url.to_string(), "rtsp://***@192.168.1.20:554/stream1?ch=1");
        assert!(!format!("{url:?}").contains("w0rd"));
        assert!(!format!("{url:?}").contains("admin"));
        assert_eq!(
            url.expose(),
            "rtsp://admin:p%40ss:w0rd@192.168.1.20:554/stream1?ch=1"
        );
        assert_eq!(url.scheme().as_deref(), Some("rtsp"));
        // What ffmpeg might print: the URL, and the password decoded.
        let said = "[rtsp @ 0x1] method DESCRIBE failed: 401 Unauthorized \
                    rtsp://admin:p%40ss:w0rd@192.168.1.20:554/stream1: p@ss:w0rd";
        let clean = url.scrub(said);
        assert!(
            !clean.contains("w0rd") && !clean.contains("admin"),
            "{clean}"
        );
        assert!(
            clean.contains("rtsp://***@192.168.1.20:554/stream1"),
            "{clean}"
        );
    }

    #[test]
    fn addresses_without_credentials_are_unchanged() {
        for text in [
            "rtsp://192.168.1.20:554/stream1",
            "rtsp://cam.lan/live?user=x@y",
            "no url here: a@b",
            "rtsps://cam.lan",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(
            redact("two: rtsp://a:b@h1/x and http://c@h2"),
            "two: rtsp://***@h1/x and http://***@h2"
        );
        assert_eq!(StreamUrl::new("cam.lan/stream").scheme(), None);
    }
}
