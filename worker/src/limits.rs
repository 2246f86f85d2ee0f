//! What a connection checks of a request before the application sees it:
//! the timeouts it carries and the request head limits hyper has no option
//! for (the request line, one header field). hyper itself enforces the
//! number of fields and the size of the whole head (see `protocol`).

use std::time::Duration;

use http::{Request, StatusCode};

/// The per-request limits of a server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// See [`RequestBody`](crate::RequestBody); `None`: none.
    pub(crate) body_read_timeout: Option<Duration>,
    /// See the `send_timeout` module; `None`: none.
    pub(crate) send_timeout: Option<Duration>,
    /// The longest request line (`None`: only the head limit).
    pub(crate) request_line: Option<usize>,
    /// The longest header field, `name: value` (`None`: only the head
    /// limit).
    pub(crate) request_field_size: Option<usize>,
    /// The most header fields.
    pub(crate) request_fields: usize,
}

impl Limits {
    /// The error status a request's head earns, if any: 414 for a request
    /// line over the limit, 431 for more fields than the limit or one
    /// field over its limit. No allocation: lengths only.
    pub(crate) fn check<B>(&self, request: &Request<B>) -> Option<StatusCode> {
        // HTTP/1 heads with more fields never get here (hyper refuses them
        // itself); HTTP/2 header lists are checked here.
        if request.headers().len() > self.request_fields {
            return Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        if let Some(limit) = self.request_line {
            if request_line_len(request) > limit {
                return Some(StatusCode::URI_TOO_LONG);
            }
        }
        let limit = self.request_field_size?;
        request
            .headers()
            .iter()
            .any(|(name, value)| name.as_str().len() + 2 + value.len() > limit)
            .then_some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    }
}

/// The length of `METHOD TARGET HTTP/x.y` (for HTTP/2, of its pseudo-header
/// equivalent).
fn request_line_len<B>(request: &Request<B>) -> usize {
    const VERSION: usize = " HTTP/1.1".len();
    let uri = request.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    request.method().as_str().len() + 1 + target + VERSION
}

#[cfg(test)]
mod tests {
    use super::Limits;
    use http::{Request, StatusCode};

    const LIMITS: Limits = Limits {
        body_read_timeout: None,
        send_timeout: None,
        request_line: Some(100),
        request_field_size: Some(50),
        request_fields: 100,
    };

    #[test]
    fn long_lines_get_414_and_long_fields_431() {
        let ok = Request::get("/x").header("a", "b").body(()).unwrap();
        assert_eq!(LIMITS.check(&ok), None);
        let line = Request::get(format!("/{}", "x".repeat(100)))
            .body(())
            .unwrap();
        assert_eq!(LIMITS.check(&line), Some(StatusCode::URI_TOO_LONG));
        let field = Request::get("/")
            .header("a", "b".repeat(48))
            .body(())
            .unwrap();
        assert_eq!(
            LIMITS.check(&field),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let mut many = Request::get("/");
        for i in 0..101 {
            many = many.header(format!("x-{i}"), "v");
        }
        assert_eq!(
            LIMITS.check(&many.body(()).unwrap()),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            "more fields than the limit (HTTP/2: hyper lets them through)"
        );
        let unlimited = Limits {
            request_line: None,
            request_field_size: None,
            ..LIMITS
        };
        assert_eq!(unlimited.check(&line), None);
        assert_eq!(unlimited.check(&field), None);
    }
}
