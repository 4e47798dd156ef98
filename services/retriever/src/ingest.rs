//! Dataprep: text out of uploaded files and fetched links, cut into chunks.
//!
//! Supported files: .txt, .md, .html/.htm, .pdf, .json, .jsonl, .csv. Links are fetched with a
//! timeout, a size cap and at most [`MAX_REDIRECTS`] redirects, each hop resolved and checked
//! first: loopback, private, link-local and other non-public addresses are refused (SSRF)
//! unless allowed, and the connection goes to the address that was checked.

use std::net::SocketAddr;
use std::time::Duration;

use comps_core::limits::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use serde_json::Value;

/// Why a document could not be ingested (answered 400 unless said otherwise).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Bad input from the client.
    #[error("{0}")]
    BadInput(String),
    /// A link could not be fetched.
    #[error("{0}")]
    Fetch(String),
    /// The document expands past a size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The document takes longer to read than allowed (422).
    #[error("{0}")]
    TooCostly(String),
    /// A local failure, not the client's (500).
    #[error("{0}")]
    Internal(String),
}

/// File types and how their text is read.
pub const SUPPORTED: &[&str] = &["txt", "md", "html", "htm", "pdf", "json", "jsonl", "csv"];

/// Redirects followed for a link.
pub const MAX_REDIRECTS: usize = 3;

/// The lowercase extension of a file name.
pub fn extension(name: &str) -> Option<String> {
    let (_, ext) = name.rsplit_once('.')?;
    Some(ext.to_ascii_lowercase())
}

/// Check an uploaded file name: a plain name (no directories, no `..`, no control characters)
/// with a supported extension.
pub fn check_file_name(name: &str) -> Result<(), IngestError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control)
        || name.starts_with('.');
    if bad {
        return Err(IngestError::BadInput(format!(
            "invalid file name {name:?}: a plain file name is required (no directories, '..' or control characters)"
        )));
    }
    match extension(name) {
        Some(ext) if SUPPORTED.contains(&ext.as_str()) => Ok(()),
        _ => Err(IngestError::BadInput(format!(
            "unsupported file type: {name} (supported: {})",
            SUPPORTED.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn json_text(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                json_text(v, &key, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                json_text(v, prefix, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push(if prefix.is_empty() { s.clone() } else { format!("{prefix}: {s}") }),
        other => out.push(if prefix.is_empty() { other.to_string() } else { format!("{prefix}: {other}") }),
    }
}

/// The text of a file's bytes, by extension.
pub fn extract_text(name: &str, bytes: &[u8]) -> Result<String, IngestError> {
    let ext = extension(name).unwrap_or_default();
    let utf8 = || {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| IngestError::BadInput(format!("{name} is not UTF-8 text: {e}")))
    };
    let text = match ext.as_str() {
        "txt" | "md" => utf8()?,
        "html" | "htm" => html_text(bytes),
        "pdf" => pdf_extract::extract_text_from_mem(bytes)
            .map_err(|e| IngestError::BadInput(format!("{name} could not be read as a PDF: {e}")))?,
        "json" => {
            let v: Value = serde_json::from_slice(bytes)
                .map_err(|e| IngestError::BadInput(format!("{name} is not valid JSON: {e}")))?;
            let mut lines = Vec::new();
            json_text(&v, "", &mut lines);
            lines.join("\n")
        }
        "jsonl" => {
            let mut records = Vec::new();
            for (i, line) in utf8()?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line)
                    .map_err(|e| IngestError::BadInput(format!("{name} line {}: not valid JSON: {e}", i + 1)))?;
                let mut lines = Vec::new();
                json_text(&v, "", &mut lines);
                records.push(lines.join("\n"));
            }
            records.join("\n\n")
        }
        "csv" => {
            let mut reader = csv::Reader::from_reader(bytes);
            let headers =
                reader.headers().map_err(|e| IngestError::BadInput(format!("{name}: CSV header: {e}")))?.clone();
            let mut rows = Vec::new();
            for (i, rec) in reader.records().enumerate() {
                let rec = rec.map_err(|e| IngestError::BadInput(format!("{name}: CSV row {}: {e}", i + 1)))?;
                let cells: Vec<String> = headers.iter().zip(rec.iter()).map(|(h, v)| format!("{h}: {v}")).collect();
                rows.push(cells.join(", "));
            }
            rows.join("\n")
        }
        _ => return Err(IngestError::BadInput(format!("unsupported file type: {name}"))),
    };
    Ok(text)
}

fn html_text(bytes: &[u8]) -> String {
    crate::html::html_to_text(bytes)
}

/// Cut `text` into chunks of at most `size` characters, consecutive chunks sharing up to
/// `overlap` characters, at the largest semantic boundary that fits (paragraph, sentence,
/// word). `size` must lie within [`MIN_CHUNK_SIZE`, `MAX_CHUNK_SIZE`] (a 1-character chunk
/// turns 23 KB of text into half a minute of work) and `overlap` below it.
pub fn chunk(text: &str, size: usize, overlap: usize) -> Result<Vec<String>, IngestError> {
    check_chunking(size, overlap)?;
    crate::chunking::Chunking::Characters { size, overlap }.cut(text)
}

/// Check dataprep's chunking parameters against the limits.
pub fn check_chunking(size: usize, overlap: usize) -> Result<(), IngestError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        return Err(IngestError::BadInput(format!(
            "chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} characters, got {size}"
        )));
    }
    if overlap >= size {
        return Err(IngestError::BadInput(format!(
            "chunk_overlap ({overlap}) must be smaller than chunk_size ({size})"
        )));
    }
    Ok(())
}

pub use crate::netcheck::is_public;

/// Limits of link fetching.
#[derive(Debug, Clone)]
pub struct LinkPolicy {
    /// Fetch loopback / private addresses too.
    pub allow_private: bool,
    /// Whole-fetch timeout.
    pub timeout: Duration,
    /// Largest body accepted.
    pub max_bytes: usize,
}

async fn resolve_checked(url: &url::Url, policy: &LinkPolicy) -> Result<Vec<SocketAddr>, IngestError> {
    let host = url.host_str().ok_or_else(|| IngestError::BadInput(format!("link {url} has no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::time::timeout(policy.timeout, tokio::net::lookup_host((host_for_lookup, port)))
        .await
        .map_err(|_| IngestError::Fetch(format!("resolving {host} timed out")))?
        .map_err(|e| IngestError::Fetch(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(IngestError::Fetch(format!("{host} has no address")));
    }
    if !policy.allow_private
        && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip()))
    {
        return Err(IngestError::BadInput(format!(
            "link {url} resolves to the non-public address {} (refused; start the retriever with --allow-private-links to allow it)",
            bad.ip()
        )));
    }
    Ok(addrs)
}

/// Fetch a link and return its text (HTML converted, other text as is).
pub async fn fetch_link(link: &str, policy: &LinkPolicy) -> Result<String, IngestError> {
    let _ = comps_core::http_client(); // installs the TLS provider
    let mut url = url::Url::parse(link).map_err(|e| IngestError::BadInput(format!("invalid link {link:?}: {e}")))?;
    for _ in 0..=MAX_REDIRECTS {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(IngestError::BadInput(format!("link {url}: only http and https links are fetched")));
        }
        let addrs = resolve_checked(&url, policy).await?;
        let host = url.host_str().unwrap_or_default().to_string();
        // Connect to exactly the addresses that were checked (no second, different lookup).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|e| IngestError::Fetch(format!("HTTP client: {e}")))?;
        let resp =
            client.get(url.clone()).send().await.map_err(|e| IngestError::Fetch(format!("fetching {url}: {e}")))?;
        if resp.status().is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| IngestError::Fetch(format!("{url} redirected without a Location")))?;
            url =
                url.join(location).map_err(|e| IngestError::Fetch(format!("{url} redirected to {location:?}: {e}")))?;
            continue;
        }
        if !resp.status().is_success() {
            return Err(IngestError::Fetch(format!("fetching {url}: HTTP {}", resp.status())));
        }
        let is_html = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.contains("html"));
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await.map_err(|e| IngestError::Fetch(format!("reading {url}: {e}")))? {
            if body.len() + chunk.len() > policy.max_bytes {
                return Err(IngestError::Fetch(format!("{url} is larger than {} bytes", policy.max_bytes)));
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(if is_html { html_text(&body) } else { String::from_utf8_lossy(&body).into_owned() });
    }
    Err(IngestError::Fetch(format!("{link}: more than {MAX_REDIRECTS} redirects")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_checked() {
        assert!(check_file_name("report.pdf").is_ok());
        for bad in
            ["../../etc/passwd.txt", "a/b.txt", "..", ".hidden.txt", "x\\y.md", "evil.exe", "noext", "a\u{0}.txt"]
        {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunks_respect_size_and_overlap() {
        let text = "One sentence here. ".repeat(200);
        let chunks = chunk(&text, 100, 20).unwrap();
        assert!(chunks.len() > 30);
        assert!(chunks.iter().all(|c| c.chars().count() <= 100));
        assert!(chunk("x", 100, 200).is_err(), "overlap larger than the size is refused");
        assert!(chunk(&text, 1, 0).is_err(), "a chunk size below the minimum is refused");
        assert!(chunk(&text, MAX_CHUNK_SIZE + 1, 0).is_err(), "a chunk size above the maximum is refused");
    }

    #[test]
    fn structured_files_become_readable_text() {
        let csv = extract_text("t.csv", b"city,country\nParis,France\nLima,Peru\n").unwrap();
        assert_eq!(csv, "city: Paris, country: France\ncity: Lima, country: Peru");
        let json = extract_text("t.json", br#"{"name": "Ada", "tags": ["x", "y"], "n": 3}"#).unwrap();
        assert_eq!(json, "n: 3\nname: Ada\ntags: x\ntags: y");
        assert!(extract_text("t.json", b"{oops").is_err());
    }
}
