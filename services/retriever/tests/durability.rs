//! Durability: files are ingested one request at a time into a real `comps-retriever` process,
//! which is killed with SIGKILL mid-ingest. After a restart on the same data directory every
//! acknowledged file is fully there and searchable, and the store opens cleanly.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, embedding_url};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(data: &std::path::Path, emb: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_comps-retriever"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--embedding-url", emb, "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(base: &str) {
    let t = Instant::now();
    loop {
        if let Ok(r) = comps_core::http_client().get(format!("{base}/v1/health_check")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the retriever did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A document with a unique fact and enough text for several chunks.
fn document(i: usize) -> String {
    let mut s = format!("Ledger {i}. The vault code of ledger number {i} is {}.\n\n", 7000 + i * 13);
    for j in 0..6 {
        s.push_str(&format!(
            "Ledger {i} entry {j}: grain, salt and cloth were counted and stored in warehouse {j}.\n\n"
        ));
    }
    s
}

async fn ingest(base: &str, i: usize) -> reqwest::Result<reqwest::Response> {
    let form = reqwest::multipart::Form::new()
        .part("files", reqwest::multipart::Part::bytes(document(i).into_bytes()).file_name(format!("ledger-{i}.txt")))
        .text("chunk_size", "120")
        .text("chunk_overlap", "0");
    comps_core::http_client().post(format!("{base}/v1/dataprep/ingest")).multipart(form).send().await
}

#[tokio::test]
async fn every_acknowledged_file_survives_kill_9() {
    let emb = embedding_url().await;
    let dir = TempDir::new("durability");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start(dir.path(), &emb, port);
    wait_ready(&base).await;

    // Ingest in a loop; kill -9 the process while requests are in flight.
    let writer = {
        let base = base.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..200 {
                match ingest(&base, i).await {
                    Ok(r) if r.status() == 200 => acknowledged.push(i),
                    _ => break,
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() >= 3, "some files were acknowledged before the kill ({})", acknowledged.len());
    assert!(acknowledged.len() < 200, "the kill happened mid-ingest");

    // Restart on the same directory.
    let mut child = start(dir.path(), &emb, port);
    wait_ready(&base).await;
    let list: Value = comps_core::http_client()
        .post(format!("{base}/v1/dataprep/get"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<String> = list.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
    for i in &acknowledged {
        assert!(names.contains(&format!("ledger-{i}.txt")), "acknowledged ledger-{i}.txt is missing after the restart");
    }
    // At most the one in-flight file beyond the acknowledged ones, and only whole.
    assert!(names.len() <= acknowledged.len() + 1, "{} stored, {} acknowledged", names.len(), acknowledged.len());
    for i in acknowledged.iter().step_by(3).chain(acknowledged.last()) {
        let q = format!("What is the vault code of ledger number {i}?");
        let v: Value = comps_core::http_client()
            .post(format!("{base}/v1/retrieval"))
            .json(&json!({"input": q, "k": 3}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = v["retrieved_docs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["text"].as_str().unwrap_or_default().contains(&format!("is {}", 7000 + i * 13)));
        assert!(found, "ledger {i}'s code is searchable after the restart: {v}");
    }
    // Every stored file has all its chunks: deleting each one succeeds and empties the store.
    for n in &names {
        let r = comps_core::http_client()
            .post(format!("{base}/v1/dataprep/delete"))
            .json(&json!({"file_path": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let v: Value = comps_core::http_client()
        .post(format!("{base}/v1/retrieval"))
        .json(&json!({"input": "vault code", "k": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["retrieved_docs"], json!([]), "no orphan chunk remains");
    child.kill().unwrap();
    child.wait().unwrap();
}
