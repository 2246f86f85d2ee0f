//! The metrics endpoint's HTTP: a request head parsed with `httparse`
//! (hyper's own parser), and one response per connection (`connection:
//! close`), which is all a scraper needs and keeps the supervisor free of
//! an HTTP stack and a runtime.

/// The longest request head taken.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// What the bytes read so far are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// Not a whole head yet.
    Partial,
    /// `GET /metrics` (or `HEAD`: the same answer without its body).
    Metrics { head_only: bool },
    /// Anything else: answered with this status and closed.
    Refused(u16, &'static str),
}

/// Reads a request head from `input`.
pub(crate) fn parse(input: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(input) {
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::Refused(400, "Bad Request"),
        Ok(httparse::Status::Complete(_)) => {
            let path = request.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            match (request.method, path) {
                (Some("GET"), "/metrics") => Head::Metrics { head_only: false },
                (Some("HEAD"), "/metrics") => Head::Metrics { head_only: true },
                (_, "/metrics") => Head::Refused(405, "Method Not Allowed"),
                _ => Head::Refused(404, "Not Found"),
            }
        }
    }
}

/// A whole response, `connection: close`.
pub(crate) fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// A short plain-text answer for a refused request.
pub(crate) fn refusal(status: u16, reason: &str) -> Vec<u8> {
    response(
        status,
        reason,
        "text/plain; charset=utf-8",
        &format!("{reason}\n"),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_metrics_are_served() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nhost: x\r\n"),
            Head::Partial
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n"),
            Head::Metrics { head_only: false }
        );
        assert_eq!(
            parse(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Head::Metrics { head_only: true }
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Head::Refused(405, "Method Not Allowed")
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Head::Refused(404, "Not Found")
        );
        assert_eq!(
            parse(b"\x00\x01garbage\r\n\r\n"),
            Head::Refused(400, "Bad Request")
        );
    }

    #[test]
    fn a_response_says_its_length_and_a_head_has_no_body() {
        let full = String::from_utf8(response(200, "OK", "text/plain", "abc", false)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(full.contains("content-length: 3\r\n") && full.ends_with("\r\n\r\nabc"));
        let head = String::from_utf8(response(200, "OK", "text/plain", "abc", true)).unwrap();
        assert!(head.contains("content-length: 3\r\n") && head.ends_with("\r\n\r\n"));
    }
}
