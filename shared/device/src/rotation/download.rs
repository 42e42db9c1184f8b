//! The server-keygen strategy's downloads: a certificate and its key
//! through presigned URLs.

use std::sync::Arc;
use std::time::Duration;

/// An HTTP client for presigned URLs (https on AWS, http on the emulator).
pub(super) fn http_agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::WebPki)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// GET a small text object; the URL is left out of errors (it carries a signature).
pub(super) fn download(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let what = url.split('?').next().unwrap_or_default();
    if url.starts_with("${") {
        return Err(format!(
            "{what}: the URL is still a placeholder (the job has no usable presignedUrlConfig)"
        ));
    }
    let mut response = agent.get(url).call().map_err(|e| format!("GET {what}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {what}: HTTP {}", response.status()));
    }
    response
        .body_mut()
        .with_config()
        .limit(256 * 1024)
        .read_to_string()
        .map_err(|e| format!("GET {what}: {e}"))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Answers each of `answers` once, in order, on loopback.
    fn server(answers: Vec<&'static str>) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut socket, _)) = listener.accept() else { return };
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request);
                let _ = socket.write_all(answer.as_bytes());
            }
        });
        port
    }

    #[test]
    fn a_placeholder_url_is_refused_without_a_request() {
        let e = download(&http_agent(), "${aws:iot:s3-presigned-url:https://b/k}").expect_err("placeholder");
        assert!(e.contains("still a placeholder"), "{e}");
    }

    #[test]
    fn an_object_is_fetched_and_a_refusal_hides_the_signature() {
        let port = server(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ]);
        let agent = http_agent();
        let url = format!("http://127.0.0.1:{port}/bucket/cert.pem?X-Amz-Signature=secret");
        assert_eq!(download(&agent, &url).expect("200"), "hello");
        let e = download(&agent, &url).expect_err("403");
        assert!(e.contains("HTTP 403"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
