//! Blob uploads: streamed hashing, digest check, and `HEAD` afterwards.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{collect, fetch, post, quick, req, send, start, Repeat};
use crate::call::hex;

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

#[tokio::test]
async fn upload_with_matching_digest_is_201_and_head_finds_it() {
    let sim = start(quick()).await;
    let digest = digest_of(b"weights");
    let path = format!("/api/blobs/{digest}");
    assert_eq!(fetch(&sim, req("HEAD", &path)).await.status, 404);
    let created = post(&sim, req("POST", &path), "weights").await;
    assert_eq!(
        (created.status.as_u16(), created.body().as_str()),
        (201, "")
    );
    assert_eq!(fetch(&sim, req("HEAD", &path)).await.status, 200);
    let dashed = path.replace("sha256:", "sha256-");
    assert_eq!(fetch(&sim, req("HEAD", &dashed)).await.status, 200);
    let again = post(&sim, req("POST", &path), "weights").await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn upload_with_wrong_digest_is_400_and_not_stored() {
    let sim = start(quick()).await;
    let claimed = digest_of(b"something else");
    let path = format!("/api/blobs/{claimed}");
    let got = post(&sim, req("POST", &path), "weights").await;
    assert_eq!(got.status, 400);
    let expected = format!(
        r#"{{"error":"digest mismatch, expected \"{claimed}\", got \"{}\""}}"#,
        digest_of(b"weights")
    );
    assert_eq!(got.body(), expected);
    let head = fetch(&sim, req("HEAD", &path)).await;
    assert_eq!((head.status.as_u16(), head.body().as_str()), (404, ""));
}

#[tokio::test]
async fn malformed_digest_is_400() {
    let sim = start(quick()).await;
    let got = post(&sim, req("POST", "/api/blobs/sha256:abc"), "x").await;
    assert_eq!(
        (got.status.as_u16(), got.body().as_str()),
        (400, r#"{"error":"invalid digest format"}"#)
    );
}

async fn upload_32_mib(known_length: bool) {
    let sim = start(quick()).await;
    let chunk = Bytes::from(vec![0x5a; 1 << 20]);
    let mut hasher = Sha256::new();
    for _ in 0..32 {
        hasher.update(&chunk);
    }
    let digest = format!("sha256:{}", hex(&hasher.finalize()));
    let body = Repeat {
        chunk,
        count: 32,
        known_length,
    };
    let request = req("POST", &format!("/api/blobs/{digest}"))
        .header("expect", "100-continue")
        .header("x-sim-id", "big")
        .body(body)
        .unwrap();
    let got = collect(send(&sim, request).await).await;
    assert_eq!(got.status, 201);
    let logged = sim.log.wait_done("big").await;
    assert_eq!(logged.body_len, 32 << 20);
    assert_eq!(
        logged.body_sha256.map(|h| format!("sha256:{h}")),
        Some(digest)
    );
}

#[tokio::test]
async fn chunked_32_mib_upload_with_expect_continue_is_hashed_whole() {
    upload_32_mib(false).await;
}

#[tokio::test]
async fn content_length_32_mib_upload_is_hashed_whole() {
    upload_32_mib(true).await;
}
