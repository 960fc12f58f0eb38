//! A raw disk into an EBS snapshot through the EBS direct API, with no
//! instance: `StartSnapshot`, `PutSnapshotBlock` for each non-zero 512 KiB
//! block (many in flight, read and hashed on a blocking thread as they
//! go), `CompleteSnapshot` with the count and the aggregate checksum, then
//! wait for EC2 to call it `completed`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use tokio::sync::{Mutex, mpsc};

use super::blocks::{self, BLOCK_SIZE, Block};
use super::client::{AwsClient, AwsError, AwsRequest};
use super::ec2::Ec2;

/// Blocks in flight at once (AWS allows about 1000 requests a second per
/// snapshot; 32 keeps a few links busy without tripping it).
pub const BLOCKS_IN_FLIGHT: usize = 32;

/// What a snapshot upload is given.
pub struct SnapshotUpload<'a> {
    pub disk: &'a Path,
    pub region: &'a str,
    pub volume_size_gib: u64,
    pub description: &'a str,
    pub tags: &'a [(String, String)],
    /// Makes a retried `StartSnapshot` start nothing twice.
    pub client_token: &'a str,
    /// How long to wait for `completed`.
    pub wait: Duration,
    /// Set (by SIGINT or SIGTERM): stop sending, and fail.
    pub cancelled: Option<&'a AtomicBool>,
}

/// A finished snapshot.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub snapshot_id: String,
    pub blocks: u64,
    pub bytes: u64,
}

/// Uploads the disk; `started` hears the snapshot's id as soon as it
/// exists (so a failure after it can delete it), `progress` the bytes
/// sent so far.
pub async fn upload(
    client: &AwsClient,
    upload: &SnapshotUpload<'_>,
    started: &mut (dyn FnMut(&str) + Send),
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Uploaded, AwsError> {
    let region = upload.region;
    let failed = |action: &str, reason: String| AwsError::Failed {
        action: action.to_owned(),
        region: region.to_owned(),
        reason,
    };
    let file = File::open(upload.disk).map_err(|error| {
        failed(
            "StartSnapshot",
            format!("cannot open {}: {error}", upload.disk.display()),
        )
    })?;
    let tags: Vec<serde_json::Value> = upload
        .tags
        .iter()
        .map(|(key, value)| json!({"Key": key, "Value": value}))
        .collect();
    let body = json!({
        "VolumeSize": upload.volume_size_gib,
        "Timeout": 60,
        "ClientToken": upload.client_token,
        "Description": upload.description,
        "Tags": tags,
    });
    let request = AwsRequest::new(
        "StartSnapshot",
        "ebs",
        region,
        reqwest::Method::POST,
        "/snapshots",
    )
    .body("application/json", body.to_string().into_bytes());
    let response = client.send(&request).await?;
    let answer: serde_json::Value =
        serde_json::from_slice(&response.body).map_err(|_| request.bad_answer("not JSON"))?;
    let snapshot_id = answer
        .get("SnapshotId")
        .and_then(|id| id.as_str())
        .filter(|id| id.starts_with("snap-"))
        .ok_or_else(|| request.bad_answer("no SnapshotId"))?
        .to_owned();
    started(&snapshot_id);

    let sent = send_blocks(
        client,
        region,
        &snapshot_id,
        file,
        progress,
        upload.cancelled,
    )
    .await?;
    let checksum = blocks::aggregate_sha256(&sent.blocks)
        .map_err(|error| failed("CompleteSnapshot", error.to_string()))?;
    let request = AwsRequest::new(
        "CompleteSnapshot",
        "ebs",
        region,
        reqwest::Method::POST,
        format!("/snapshots/completion/{snapshot_id}"),
    )
    .header("x-amz-ChangedBlocksCount", sent.blocks.len().to_string())
    .header("x-amz-Checksum", checksum)
    .header("x-amz-Checksum-Algorithm", "SHA256")
    .header("x-amz-Checksum-Aggregation-Method", "LINEAR");
    let response = client.send(&request).await?;
    let answer: serde_json::Value =
        serde_json::from_slice(&response.body).map_err(|_| request.bad_answer("not JSON"))?;
    if answer.get("Status").and_then(|status| status.as_str()) == Some("error") {
        return Err(failed(
            "CompleteSnapshot",
            format!("snapshot {snapshot_id} failed"),
        ));
    }
    wait_completed(client, region, &snapshot_id, upload.wait).await?;
    Ok(Uploaded {
        snapshot_id,
        blocks: sent.blocks.len() as u64,
        bytes: sent.bytes,
    })
}

struct Sent {
    /// In index order.
    blocks: Vec<Block>,
    bytes: u64,
}

/// One block read: its index, checksum and bytes.
type ReadBlock = (u64, String, Vec<u8>);

/// Reads the data blocks on a blocking thread into a bounded queue that
/// [`BLOCKS_IN_FLIGHT`] senders drain; the first failure stops all.
async fn send_blocks(
    client: &AwsClient,
    region: &str,
    snapshot_id: &str,
    file: File,
    progress: &(dyn Fn(u64) + Sync),
    cancelled: Option<&AtomicBool>,
) -> Result<Sent, AwsError> {
    let (queue, receiver) = mpsc::channel::<ReadBlock>(BLOCKS_IN_FLIGHT * 2);
    let reader = tokio::task::spawn_blocking(move || {
        blocks::scan(&file, |index, data| {
            let sha256 = blocks::base64_sha256(data);
            Ok(queue.blocking_send((index, sha256, data.to_vec())).is_ok())
        })
    });
    let receiver = Arc::new(Mutex::new(receiver));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..BLOCKS_IN_FLIGHT {
        let client = client.clone();
        let receiver = Arc::clone(&receiver);
        let bytes = Arc::clone(&bytes);
        let region = region.to_owned();
        let snapshot_id = snapshot_id.to_owned();
        senders.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let next = receiver.lock().await.recv().await;
                let Some((index, sha256, data)) = next else {
                    return Ok::<_, AwsError>(sent);
                };
                put_block(&client, &region, &snapshot_id, index, &sha256, data).await?;
                bytes.fetch_add(BLOCK_SIZE, Ordering::Relaxed);
                sent.push(Block { index, sha256 });
            }
        });
    }
    let mut all = Vec::new();
    let mut failure = None;
    while let Some(joined) = senders.join_next().await {
        match joined {
            Ok(Ok(sent)) => all.extend(sent),
            Ok(Err(error)) => {
                failure.get_or_insert(error);
                senders.abort_all();
                receiver.lock().await.close();
            }
            Err(error) if error.is_cancelled() => {}
            Err(error) => {
                failure.get_or_insert(AwsError::Failed {
                    action: "PutSnapshotBlock".to_owned(),
                    region: region.to_owned(),
                    reason: error.to_string(),
                });
                senders.abort_all();
                receiver.lock().await.close();
            }
        }
        progress(bytes.load(Ordering::Relaxed));
        if failure.is_none() && cancelled.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            failure = Some(AwsError::Failed {
                action: "PutSnapshotBlock".to_owned(),
                region: region.to_owned(),
                reason: "cancelled".to_owned(),
            });
            senders.abort_all();
            receiver.lock().await.close();
        }
    }
    let read = reader.await;
    if let Some(error) = failure {
        return Err(error);
    }
    let read_failed = |reason: String| AwsError::Failed {
        action: "read the disk for PutSnapshotBlock".to_owned(),
        region: region.to_owned(),
        reason,
    };
    match read {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(read_failed(error.to_string())),
        Err(error) => return Err(read_failed(error.to_string())),
    }
    all.sort_by_key(|block| block.index);
    Ok(Sent {
        bytes: bytes.load(Ordering::Relaxed),
        blocks: all,
    })
}

async fn put_block(
    client: &AwsClient,
    region: &str,
    snapshot_id: &str,
    index: u64,
    sha256: &str,
    data: Vec<u8>,
) -> Result<(), AwsError> {
    let sha256_hex: String = base64::engine::general_purpose::STANDARD
        .decode(sha256)
        .unwrap_or_default()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut request = AwsRequest::new(
        "PutSnapshotBlock",
        "ebs",
        region,
        reqwest::Method::PUT,
        format!("/snapshots/{snapshot_id}/blocks/{index}"),
    )
    .header("x-amz-Data-Length", data.len().to_string())
    .header("x-amz-Checksum", sha256)
    .header("x-amz-Checksum-Algorithm", "SHA256")
    .body("application/octet-stream", data);
    request.body_sha256 = Some(sha256_hex);
    client.send(&request).await.map(drop)
}

/// Polls `DescribeSnapshots` until the snapshot is `completed`.
async fn wait_completed(
    client: &AwsClient,
    region: &str,
    snapshot_id: &str,
    limit: Duration,
) -> Result<(), AwsError> {
    let ec2 = Ec2 { client, region };
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let status = ec2.snapshot_status(snapshot_id).await?;
        match status.as_deref() {
            Some("completed") => return Ok(()),
            Some("error") => {
                return Err(AwsError::Failed {
                    action: "complete the snapshot".to_owned(),
                    region: region.to_owned(),
                    reason: format!("snapshot {snapshot_id} is in state error"),
                });
            }
            _ if started.elapsed() > limit => {
                return Err(AwsError::Failed {
                    action: "complete the snapshot".to_owned(),
                    region: region.to_owned(),
                    reason: format!(
                        "snapshot {snapshot_id} is still {} after {}s",
                        status.as_deref().unwrap_or("missing"),
                        limit.as_secs()
                    ),
                });
            }
            _ => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}
