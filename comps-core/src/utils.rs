//! Utilities shared by services and megaservices: OPEA's `handle_message` prompt rendering,
//! image loading, port checks, the internal IP, the process-wide HTTP client and files'
//! SHA-256.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::ServiceError;
use crate::protocol::{ContentPart, MessageContent, Messages};

/// A rendered prompt and the image references found in user messages (unresolved: URLs,
/// data URIs, paths or raw base64 — see [`load_image`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prompt {
    /// The prompt text.
    pub text: String,
    /// Image references in message order.
    pub images: Vec<String>,
}

/// OPEA's `handle_message`: system prompt first (the last one wins), then `role: text\n` per
/// user/assistant message, `role:` when the text is empty; text parts joined by `\n`; image
/// parts collected. Any other role is an error naming it.
pub fn handle_message(messages: &Messages) -> Result<Prompt, ServiceError> {
    let list = match messages {
        Messages::Text(t) => return Ok(Prompt { text: t.clone(), images: Vec::new() }),
        Messages::List(list) => list,
    };
    let mut system = String::new();
    let mut body = String::new();
    let mut images = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let (text, imgs) = match &m.content {
            None => (String::new(), Vec::new()),
            Some(MessageContent::Text(t)) => (t.clone(), Vec::new()),
            Some(MessageContent::Parts(parts)) => {
                let texts: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Text { text } => Some(text.as_str()),
                        ContentPart::ImageUrl { .. } => None,
                    })
                    .collect();
                let imgs = parts
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::ImageUrl { image_url } => Some(image_url.url.clone()),
                        ContentPart::Text { .. } => None,
                    })
                    .collect();
                (texts.join("\n"), imgs)
            }
        };
        match m.role.as_str() {
            "system" => system = text,
            // OPEA only collects images from user messages.
            "user" => {
                push_turn(&mut body, "user", &text);
                images.extend(imgs);
            }
            "assistant" => push_turn(&mut body, "assistant", &text),
            other => {
                return Err(ServiceError::invalid(format!("messages.{i}.role"), format!("Unknown role: {other}")));
            }
        }
    }
    let text = if system.is_empty() { body } else { format!("{system}\n{body}") };
    Ok(Prompt { text, images })
}

fn push_turn(out: &mut String, role: &str, text: &str) {
    out.push_str(role);
    if text.is_empty() {
        out.push(':');
    } else {
        out.push_str(": ");
        out.push_str(text);
        out.push('\n');
    }
}

/// Largest image fetched or read.
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// Resolve an image reference to base64: `data:` URIs are unwrapped, `http(s)` URLs fetched
/// (timeout and size cap), existing local files read, anything else taken as base64 already
/// (and checked to decode).
pub async fn load_image(reference: &str, timeout: Duration) -> Result<String, ServiceError> {
    if let Some(rest) = reference.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| ServiceError::invalid("image_url", "data URI has no ',' before its data"))?;
        if !meta.ends_with(";base64") {
            return Err(ServiceError::invalid("image_url", "only base64 data URIs are supported"));
        }
        B64.decode(data.trim()).map_err(|e| ServiceError::invalid("image_url", format!("invalid base64: {e}")))?;
        return Ok(data.trim().to_string());
    }
    if reference.starts_with("http://") || reference.starts_with("https://") {
        let bytes = fetch_capped(reference, timeout, MAX_IMAGE_BYTES).await?;
        return Ok(B64.encode(bytes));
    }
    let path = std::path::Path::new(reference);
    if reference.len() < 4096 && path.is_file() {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| ServiceError::invalid("image_url", format!("cannot read {reference}: {e}")))?;
        if meta.len() as usize > MAX_IMAGE_BYTES {
            return Err(ServiceError::PayloadTooLarge(format!(
                "image {reference} is larger than {MAX_IMAGE_BYTES} bytes"
            )));
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| ServiceError::invalid("image_url", format!("cannot read {reference}: {e}")))?;
        return Ok(B64.encode(bytes));
    }
    B64.decode(reference.trim()).map_err(|_| {
        ServiceError::invalid("image_url", "image is not a URL, a data URI, an existing file or base64 data")
    })?;
    Ok(reference.trim().to_string())
}

async fn fetch_capped(url: &str, timeout: Duration, cap: usize) -> Result<Vec<u8>, ServiceError> {
    use futures::StreamExt;
    let resp = http_client()
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| ServiceError::Upstream(format!("fetching image {url} failed: {e}")))?;
    if !resp.status().is_success() {
        return Err(ServiceError::Upstream(format!("fetching image {url} returned {}", resp.status())));
    }
    if resp.content_length().is_some_and(|l| l as usize > cap) {
        return Err(ServiceError::PayloadTooLarge(format!("image {url} is larger than {cap} bytes")));
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ServiceError::Upstream(format!("fetching image {url} failed: {e}")))?;
        if out.len() + chunk.len() > cap {
            return Err(ServiceError::PayloadTooLarge(format!("image {url} is larger than {cap} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Whether `host:port` can be bound now.
pub fn is_port_free(host: &str, port: u16) -> bool {
    TcpListener::bind((host, port)).is_ok()
}

/// Whether every port is free on every host (OPEA's `check_ports_availability`).
pub fn check_ports_availability(hosts: &[&str], ports: &[u16]) -> bool {
    hosts.iter().all(|h| ports.iter().all(|p| is_port_free(h, *p)))
}

/// This machine's first non-loopback IPv4 address, else 127.0.0.1.
pub fn get_internal_ip() -> IpAddr {
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifs| ifs.into_iter().find(|i| !i.is_loopback() && i.ip().is_ipv4()).map(|i| i.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The SHA-256 of a file's content in lowercase hex (as the Hugging Face Hub names LFS
/// blobs), read 1 MiB at a time. Blocking: call it off the async runtime for big files.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The process-wide pooled HTTP client (rustls on the ring provider). Per-call timeouts are set
/// on each request; this only bounds connecting.
pub fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client builds with the ring provider")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_file_matches_known_digests() {
        let dir = std::env::temp_dir().join(format!("comps-sha256-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (abc, big) = (dir.join("abc"), dir.join("big"));
        std::fs::write(&abc, b"abc").unwrap();
        // Three read buffers' worth (the digest from Python's hashlib).
        std::fs::write(&big, vec![b'a'; 3_000_000]).unwrap();
        assert_eq!(sha256_file(&abc).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_file(&big).unwrap(), "2a152c894398719c0570f83fac34ac03a0f6e8e474b995c2403aa5434f7b9dd4");
        assert!(sha256_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
