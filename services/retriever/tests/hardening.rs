//! Hostile uploads and requests against the retriever: each was found to crash it, wipe its
//! data, exhaust its memory or time, or answer outside the error envelope. Each must now be a
//! clear 4xx while the service keeps serving and keeps its data.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{TempDir, args, embedding_url, post, serve_with, upload};
use serde_json::{Value, json};

/// A PDF with a correct cross-reference table around `objects` (object 1 is the catalog).
fn pdf(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        writeln!(out, "{} 0 obj", i + 1).unwrap();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).unwrap();
    for o in offsets {
        writeln!(out, "{o:010} 00000 n ").unwrap();
    }
    write!(out, "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).unwrap();
    out
}

/// A one-page PDF whose content stream is `content` (already encoded) with `filter`.
fn one_page(content: &[u8], filter: &str, page_extra: &str) -> Vec<u8> {
    let mut stream = format!("<< /Length {} {filter} >>\nstream\n", content.len()).into_bytes();
    stream.extend_from_slice(content);
    stream.extend_from_slice(b"\nendstream");
    pdf(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
             /Resources << /Font << /F1 5 0 R >> >> {page_extra} >>"
        )
        .into_bytes(),
        stream,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ])
}

async fn still_serving(base: &str) {
    let (status, v) = post(base, "/v1/dataprep/get", json!({})).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn deeply_nested_and_bomb_pdfs_are_refused_and_the_service_lives() {
    let dir = TempDir::new("pdf-attacks");
    let mut a = args(dir.path(), &embedding_url().await);
    a.extract_memory_mb = 256;
    let h = serve_with(a).await;
    let base = h.url();

    // A readable PDF still reads (the worker path works end to end).
    let ok = one_page(b"BT /F1 12 Tf 72 700 Td (Quartz harbour ledger) Tj ET", "", "");
    let (status, v) = upload(&base, &[("ok.pdf", ok)], &[]).await;
    assert_eq!(status, 200, "{v}");

    // 1. One array nested 5,000 deep: the parser recursed until the stack overflowed and the
    //    whole retriever aborted.
    let depth = 5_000;
    let nest = format!("/Nest {}{}", "[".repeat(depth), "]".repeat(depth));
    let deep = one_page(b"BT /F1 12 Tf (x) Tj ET", "", &nest);
    assert!(deep.len() < 16 * 1024);
    let (status, v) = upload(&base, &[("deep.pdf", deep)], &[]).await;
    assert!(status == 400 || status == 422, "{status} {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("deep.pdf"), "{v}");
    still_serving(&base).await;

    // 3. A decompression bomb: ~0.5 MB of Flate expanding to 512 MiB, past the worker's
    //    256 MiB of memory.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..512 {
        z.write_all(&zeros).unwrap();
    }
    let compressed = z.finish().unwrap();
    assert!(compressed.len() < 2 << 20, "{}", compressed.len());
    let bomb = one_page(&compressed, "/Filter /FlateDecode", "");
    let started = Instant::now();
    let (status, v) = upload(&base, &[("bomb.pdf", bomb)], &[]).await;
    assert!([400, 413, 422].contains(&status), "{status} {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("bomb.pdf"), "{v}");
    assert!(started.elapsed() < Duration::from_secs(90), "{:?}", started.elapsed());
    still_serving(&base).await;

    // Nothing of the refused files was stored; the good one is there.
    let (_, files) = post(&base, "/v1/dataprep/get", json!({})).await;
    let names: Vec<&str> = files.as_array().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["ok.pdf"]);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn text_past_the_extraction_limit_is_413() {
    let dir = TempDir::new("text-cap");
    let mut a = args(dir.path(), &embedding_url().await);
    a.max_extracted_bytes = 1000;
    let h = serve_with(a).await;
    let (status, v) = upload(&h.url(), &[("long.txt", "word ".repeat(1000).into_bytes())], &[]).await;
    assert_eq!(status, 413, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("--max-extracted-bytes"), "{v}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn html_nested_200k_deep_is_read_in_linear_time() {
    let dir = TempDir::new("deep-html");
    let h = serve_with(args(dir.path(), &embedding_url().await)).await;
    let depth = 200_000;
    let mut html = "<div>".repeat(depth);
    html.push_str("<p>The Brinewick ferry leaves at dawn.</p>");
    html.push_str(&"</div>".repeat(depth));
    let started = Instant::now();
    let (status, v) = upload(&h.url(), &[("deep.html", html.into_bytes())], &[]).await;
    assert_eq!(status, 200, "{v}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let (status, v) = post(&h.url(), "/v1/retrieval", json!({"input": "When does the ferry leave?", "k": 1})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["retrieved_docs"][0]["text"], "The Brinewick ferry leaves at dawn.");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn index_names_cannot_leave_the_data_directory() {
    let dir = TempDir::new("index-names");
    let h = serve_with(args(dir.path(), &embedding_url().await)).await;
    let base = h.url();
    let (status, v) = upload(&base, &[("keep.txt", b"The archive keeps the old charts.".to_vec())], &[]).await;
    assert_eq!(status, 200, "{v}");

    for bad in ["..", ".", ".hidden", "../x", "a/b", "-x"] {
        // 2. `delete all` on ".." removed the whole data directory, vector store included.
        let (status, v) = post(&base, "/v1/dataprep/delete", json!({"file_path": "all", "index_name": bad})).await;
        assert_eq!(status, 422, "{bad}: {v}");
        assert_eq!(v["error"]["param"], "index_name", "{v}");
        let (status, v) = post(&base, "/v1/dataprep/get", json!({"index_name": bad})).await;
        assert_eq!(status, 422, "{bad}: {v}");
        // Ingest with ".." wrote outside uploads/.
        let (status, v) = upload(&base, &[("escape.txt", b"out".to_vec())], &[("index_name", bad)]).await;
        assert_eq!(status, 422, "{bad}: {v}");
    }
    let (_, files) = post(&base, "/v1/dataprep/get", json!({})).await;
    assert_eq!(files[0]["name"], "keep.txt", "{files}");
    assert!(dir.path().join("store").exists());
    assert!(dir.path().join("uploads/rag/keep.txt").is_file());
    let escaped: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.ends_with("escape.txt")).collect();
    assert!(escaped.is_empty(), "{escaped:?}");
    // A well-formed name with dots inside is still a collection.
    let (status, v) = upload(&base, &[("n.txt", b"Dotted names work.".to_vec())], &[("index_name", "team.v2")]).await;
    assert_eq!(status, 200, "{v}");
    h.shutdown().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[tokio::test]
async fn chunk_sizes_are_bounded_and_form_bodies_get_the_envelope() {
    let dir = TempDir::new("chunk-bounds");
    let h = serve_with(args(dir.path(), &embedding_url().await)).await;
    let base = h.url();
    let text = "A sentence about tides. ".repeat(1000).into_bytes();
    for size in ["1", "49", "100001"] {
        let started = Instant::now();
        let (status, v) = upload(&base, &[("t.txt", text.clone())], &[("chunk_size", size)]).await;
        assert_eq!(status, 422, "{size}: {v}");
        assert_eq!(v["error"]["param"], "chunk_size", "{v}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let (status, v) = upload(&base, &[("t.txt", text)], &[("chunk_size", "50"), ("chunk_overlap", "0")]).await;
    assert_eq!(status, 200, "{v}");

    // 11. A URL-encoded body where multipart is expected: the envelope, not plain text.
    let r = comps_core::http_client()
        .post(format!("{base}/v1/dataprep/ingest"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("files=notes.txt&chunk_size=100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("a JSON error envelope");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "400", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().to_lowercase().contains("multipart"), "{v}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_bad_values_are_not_echoed_whole() {
    let dir = TempDir::new("echo");
    let h = serve_with(args(dir.path(), &embedding_url().await)).await;
    let huge = "x".repeat(10 * 1024 * 1024);
    let r = comps_core::http_client()
        .post(format!("{}/v1/retrieval", h.url()))
        .json(&json!({"input": "q", "embedding": vec![0.1f32; 384], "search_type": huge}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    assert!((400..500).contains(&status), "{status}");
    assert!(body.len() < 4096, "a {} byte error body", body.len());
    h.shutdown().await.unwrap();
}
