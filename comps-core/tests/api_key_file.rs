//! `--api-key-file`: the key read from a file protects a real server; bad files and a key
//! given twice stop the start with an error naming the file.

use std::path::PathBuf;

use axum::routing::post;
use clap::Parser;
use comps_core::{CommonArgs, Json, MicroService, Server, ServiceResult, TextDoc};
use serde_json::json;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn parse(args: &[&str]) -> Result<CommonArgs, String> {
    Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied())).map(|c| c.common).map_err(|e| e.to_string())
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &[u8]) -> Self {
        let p = std::env::temp_dir().join(format!("comps-key-{}-{name}", comps_core::protocol::new_id()));
        std::fs::write(&p, content).unwrap();
        Self(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn echo(Json(doc): Json<TextDoc>) -> ServiceResult<Json<TextDoc>> {
    Ok(Json(TextDoc::new(doc.text_str())))
}

#[tokio::test]
async fn a_server_configured_from_a_key_file_requires_that_key() {
    let file = TempFile::new("good", b"  s3cret-from-file\n\n");
    let common = parse(&["--api-key-file", file.path(), "--host", "127.0.0.1", "--port", "0"]).unwrap();
    assert_eq!(common.api_key().as_deref(), Some("s3cret-from-file"));
    // The key never shows in debug output.
    assert!(!format!("{common:?}").contains("s3cret"), "{common:?}");
    let svc = common.apply(MicroService::new("echo").endpoint("/v1/echo"), 0);
    let h = Server::new(svc, common.server_config()).route("/v1/echo", post(echo)).bind().await.unwrap().spawn();
    let url = format!("{}/v1/echo", h.url());
    let client = comps_core::http_client();
    let body = json!({"text": "hi"});
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.post(&url).bearer_auth("  s3cret-from-file\n\n").json(&body).send().await;
    assert!(r.is_err() || r.unwrap().status() == 401, "the untrimmed content is not the key");
    let r = client.post(&url).bearer_auth("wrong").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.post(&url).bearer_auth("s3cret-from-file").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("{}/v1/health_check", h.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.shutdown().await.unwrap();
}

#[test]
fn bad_key_files_and_two_keys_are_start_up_errors_naming_the_file() {
    let missing = std::env::temp_dir().join("comps-no-such-key-file");
    let e = parse(&["--api-key-file", missing.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("cannot read the API key file") && e.contains("comps-no-such-key-file"), "{e}");

    let empty = TempFile::new("empty", b" \n\t\n");
    let e = parse(&["--api-key-file", empty.path()]).unwrap_err();
    assert!(e.contains(&format!("the API key file {} is empty", empty.path())), "{e}");

    let two_lines = TempFile::new("two", b"key-one\nkey-two\n");
    let e = parse(&["--api-key-file", two_lines.path()]).unwrap_err();
    assert!(e.contains(two_lines.path()) && e.contains("more than one line"), "{e}");
    assert!(!e.contains("key-one"), "the error quotes the key: {e}");

    let huge = TempFile::new("huge", &vec![b'k'; comps_core::limits::API_KEY_FILE_MAX_BYTES + 1]);
    let e = parse(&["--api-key-file", huge.path()]).unwrap_err();
    assert!(e.contains(huge.path()) && e.contains("larger than"), "{e}");

    let dir = std::env::temp_dir();
    let e = parse(&["--api-key-file", dir.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("cannot read the API key file"), "{e}");

    let good = TempFile::new("both", b"k");
    let e = parse(&["--api-key", "other", "--api-key-file", good.path()]).unwrap_err();
    assert!(e.contains("--api-key") && e.contains("cannot be used with"), "{e}");

    // The plain flag still works, and no key at all means no auth.
    assert_eq!(parse(&["--api-key", "flag-key"]).unwrap().server_config().api_key.as_deref(), Some("flag-key"));
    assert_eq!(parse(&[]).unwrap().server_config().api_key, None);
}
