//! AWS Signature Version 4: the canonical request, the string to sign,
//! the signing key and the `Authorization` header, for requests kiln makes
//! to EBS, EC2 and SSM with its own HTTP client (the AWS SDK costs minutes
//! of build time). Written from AWS's description of the process and
//! checked against the canonical requests of AWS's signing test suite.

use sha2::{Digest as _, Sha256};

/// What a request is signed with.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    /// Never the secret or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A request to sign: its method, path (as sent: already percent-encoded),
/// query pairs (not encoded), headers and the sha256 of its body.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub payload_sha256: &'a str,
}

/// Where and when a request is signed.
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    /// `20150830T123600Z`.
    pub amz_date: &'a str,
}

/// The sha256 of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The headers to add to `request` (`x-amz-date`, the session token) and
/// its `Authorization` header, signed with `credentials` for `scope`.
pub fn sign(
    request: &Request<'_>,
    scope: &Scope<'_>,
    credentials: &Credentials,
) -> Vec<(String, String)> {
    let mut added = vec![("x-amz-date".to_owned(), scope.amz_date.to_owned())];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_owned(), token.clone()));
    }
    let mut headers: Vec<(String, String)> = request.headers.to_vec();
    headers.extend(added.iter().cloned());
    let signing = Request {
        headers: &headers,
        ..*request
    };
    let (canonical, signed_headers) = canonical_request(&signing);
    let date = &scope.amz_date[..scope.amz_date.len().min(8)];
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{credential_scope}\n{}",
        scope.amz_date,
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [scope.region, scope.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    added.push((
        "authorization".to_owned(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    added
}

/// The canonical request and its signed-headers list.
pub fn canonical_request(request: &Request<'_>) -> (String, String) {
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(name, value)| (encode(name), encode(value)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in request.headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match headers.iter_mut().find(|(known, _)| *known == name) {
            Some((_, values)) => {
                values.push(',');
                values.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let signed = signed.join(";");
    (
        format!(
            "{}\n{}\n{query}\n{canonical_headers}\n{signed}\n{}",
            request.method,
            canonical_path(request.path),
            request.payload_sha256
        ),
        signed,
    )
}

/// The path with `.` and `..` segments and repeated slashes removed, each
/// segment percent-encoded again (every service but S3 wants it twice).
fn canonical_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut canonical = String::from("/");
    canonical.push_str(
        &segments
            .iter()
            .map(|segment| encode(segment))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if path.ends_with('/') && !segments.is_empty() {
        canonical.push('/');
    }
    canonical
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
pub fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|key| key ^ byte).collect::<Vec<u8>>();
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// AWS's get-vanilla case, signed with SigV4.
    #[test]
    fn the_vanilla_request_gets_awss_signature() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
            session_token: None,
        };
        let headers = vec![("Host".to_owned(), "example.amazonaws.com".to_owned())];
        let added = sign(
            &Request {
                method: "GET",
                path: "/",
                query: &[],
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
            },
            &Scope {
                region: "us-east-1",
                service: "service",
                amz_date: "20150830T123600Z",
            },
            &credentials,
        );
        let authorization = &added.last().unwrap().1;
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert!(!format!("{credentials:?}").contains("EXAMPLEKEY"));
    }

    /// `%XX` escapes decoded, as a query string is read.
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut index = 0;
        while index < bytes.len() {
            if bytes[index] == b'%'
                && let Some(value) = text
                    .get(index + 1..index + 3)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(value);
                index += 3;
                continue;
            }
            out.push(bytes[index]);
            index += 1;
        }
        String::from_utf8(out).unwrap()
    }

    /// Every case of the suite whose paths are normalized (all services
    /// but S3): kiln's canonical request is the suite's, byte for byte.
    #[test]
    fn canonical_requests_match_awss_signing_test_suite() {
        let suite = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/aws-signing-test-suite");
        let mut cases: Vec<_> = std::fs::read_dir(&suite)
            .unwrap()
            .flatten()
            .filter(|entry| entry.path().join("request.txt").is_file())
            .map(|entry| entry.path())
            .collect();
        cases.sort();
        let mut checked = 0;
        for case in cases {
            let context: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(case.join("context.json")).unwrap())
                    .unwrap();
            if context["normalize"] == false {
                continue;
            }
            let request = std::fs::read_to_string(case.join("request.txt")).unwrap();
            let expected =
                std::fs::read_to_string(case.join("header-canonical-request.txt")).unwrap();
            let mut lines = request.lines();
            let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
            let (method, target) = (first[0], first[1]);
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let query: Vec<(String, String)> = query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(name), decode(value))
                })
                .collect();
            let mut headers: Vec<(String, String)> = lines
                .by_ref()
                .take_while(|line| !line.is_empty())
                .map(|line| {
                    let (name, value) = line.split_once(':').unwrap();
                    (name.to_owned(), value.to_owned())
                })
                .collect();
            headers.push(("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()));
            headers.push(("X-Amz-Region-Set".to_owned(), "us-east-1".to_owned()));
            // Some services take the token unsigned (`omit_session_token`).
            if let Some(token) = context["credentials"]["token"].as_str()
                && context["omit_session_token"] != true
            {
                headers.push(("X-Amz-Security-Token".to_owned(), token.to_owned()));
            }
            let payload = expected.lines().last().unwrap();
            if context["sign_body"] == true {
                headers.push(("X-Amz-Content-Sha256".to_owned(), payload.to_owned()));
            }
            let (canonical, _) = canonical_request(&Request {
                method,
                path,
                query: &query,
                headers: &headers,
                payload_sha256: payload,
            });
            assert_eq!(canonical, expected.trim_end(), "{}", case.display());
            checked += 1;
        }
        assert!(
            checked >= 25,
            "only {checked} cases read from {}",
            suite.display()
        );
    }
}
