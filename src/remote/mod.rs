//! Talking to OCI distribution registries (docker-registry, Harbor, ECR,
//! GHCR, zot) over HTTPS, or plain HTTP for loopback or `--insecure`.
//!
//! Blobs stream from and to files, never held in memory; every pulled blob
//! is verified against its digest and size before it is kept. Requests are
//! retried with backoff on connection errors and 5xx answers; a `401` is
//! answered once, following the registry's challenge (basic, or a bearer
//! token from its token service), and a second `401` is one clear error.

pub mod auth;
pub mod pull;
pub mod push;
pub mod signatures;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Response, StatusCode};

use crate::io_error::IoError;
use crate::oci;
use crate::reference::Digest;
use crate::report::{Direction, Event, Reporter, TransferOutcome};
use crate::store::StoreError;
use auth::{Challenge, Credentials};

pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
const ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Signing(Box<crate::signing::SigningError>),
    #[error("failed to reach {host}")]
    Connect {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "{host} asks for credentials; log in with `kiln login {host}` or set KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD"
    )]
    AuthRequired { host: String },
    #[error(
        "{host} refused the credentials (wrong user name or password, or no access to {repository})"
    )]
    Unauthorized { host: String, repository: String },
    #[error("{host} answered {status} to {what}: {body}")]
    Status {
        host: String,
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error(
        "{reference} is already on {host} as {existing}, and this is {new}; versions never change: bump the version"
    )]
    TagConflict {
        host: String,
        reference: String,
        existing: Digest,
        new: Digest,
    },
    #[error("{what} from {host} does not match its digest {expected}: it hashes to {actual}")]
    DigestMismatch {
        host: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{} is not a PEM certificate", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("{host} named a token service that is not a URL: {realm}")]
    TokenRealm {
        host: String,
        realm: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the token service at {realm} answered something that is not a token")]
    TokenAnswer {
        realm: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the token service at {realm} gave no token")]
    NoToken { realm: String },
    #[error("{host} gave no upload location")]
    NoUploadLocation { host: String },
    #[error("refused blob {digest} from {host}")]
    RefusedBlob {
        host: String,
        digest: Digest,
        #[source]
        source: Box<StoreError>,
    },
    #[error("the blob writer stopped")]
    BlobWriter(#[source] tokio::task::JoinError),
    #[error("{host} answered {what} kiln cannot read")]
    Unreadable {
        host: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{reference} has no image for linux/{architecture}")]
    NoPlatform {
        reference: String,
        architecture: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

impl From<crate::signing::SigningError> for RemoteError {
    fn from(error: crate::signing::SigningError) -> Self {
        RemoteError::Signing(Box::new(error))
    }
}

impl RemoteError {
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            RemoteError::TagConflict { .. }
                | RemoteError::Store(StoreError::VersionConflict { .. })
        )
    }
}

pub type Result<T> = std::result::Result<T, RemoteError>;

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct RemoteOptions {
    /// Plain HTTP even off loopback.
    pub insecure: bool,
    /// An extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// `$KILN_HOME`, for `kiln login` credentials.
    pub home: PathBuf,
}

/// A registry host, with its credentials and the last token it issued.
pub struct Registry {
    host: String,
    base: String,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    /// The `Authorization` header that worked last, reused until refused.
    authorization: Mutex<Option<String>>,
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// The ring provider, for rustls; installed once per process.
pub(crate) fn install_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Registry {
    /// A client for `host` with the credentials kiln finds for it.
    pub fn new(host: &str, options: &RemoteOptions) -> Result<Self> {
        Self::with_credentials(host, options, auth::credentials_for(&options.home, host))
    }

    pub fn with_credentials(
        host: &str,
        options: &RemoteOptions,
        credentials: Option<Credentials>,
    ) -> Result<Self> {
        install_crypto_provider();
        let scheme = if options.insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(ca_file) = &options.ca_file {
            let pem = std::fs::read(ca_file).map_err(IoError::at("read the CA file", ca_file))?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|source| {
                RemoteError::Certificate {
                    path: ca_file.clone(),
                    source,
                }
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(connect_error(host.to_owned()))?;
        Ok(Self {
            host: host.to_owned(),
            base: format!("{scheme}://{host}"),
            client,
            credentials,
            authorization: Mutex::new(None),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Sends a request built by `build` (called again for each attempt),
    /// retrying connection errors and 5xx, and answering one `401`.
    async fn send(
        &self,
        repository: &str,
        scope: &str,
        build: &(dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Sync),
    ) -> Result<Response> {
        let mut answered_challenge = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = build(&self.client);
            if let Some(authorization) = self
                .authorization
                .lock()
                .expect("no panics while locked")
                .clone()
            {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(source)
                    if attempt < ATTEMPTS
                        && (source.is_connect() || source.is_timeout() || source.is_request()) =>
                {
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(source) => {
                    return Err(RemoteError::Connect {
                        host: self.host.clone(),
                        source,
                    });
                }
            };
            if response.status().is_server_error() && attempt < ATTEMPTS {
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if answered_challenge {
                return Err(RemoteError::Unauthorized {
                    host: self.host.clone(),
                    repository: repository.to_owned(),
                });
            }
            answered_challenge = true;
            let authorization = self.answer(response.headers(), repository, scope).await?;
            *self.authorization.lock().expect("no panics while locked") = Some(authorization);
        }
    }

    /// The `Authorization` header that answers a `401` challenge.
    async fn answer(&self, headers: &HeaderMap, repository: &str, scope: &str) -> Result<String> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .and_then(auth::parse_challenge)
            .unwrap_or(Challenge::Basic);
        let auth_required = || RemoteError::AuthRequired {
            host: self.host.clone(),
        };
        match challenge {
            Challenge::Basic => Ok(self
                .credentials
                .as_ref()
                .ok_or_else(auth_required)?
                .basic_header()),
            Challenge::Bearer {
                realm,
                service,
                scope: challenge_scope,
            } => {
                let scope =
                    challenge_scope.unwrap_or_else(|| format!("repository:{repository}:{scope}"));
                let mut url =
                    reqwest::Url::parse(&realm).map_err(|source| RemoteError::TokenRealm {
                        host: self.host.clone(),
                        realm: realm.clone(),
                        source: Box::new(source),
                    })?;
                url.query_pairs_mut().append_pair("scope", &scope);
                if let Some(service) = &service {
                    url.query_pairs_mut().append_pair("service", service);
                }
                let mut request = self.client.get(url);
                if let Some(credentials) = &self.credentials {
                    request = request.header(AUTHORIZATION, credentials.basic_header());
                }
                let response = request.send().await.map_err(connect_error(realm.clone()))?;
                match response.status() {
                    StatusCode::OK => {}
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                        if self.credentials.is_none() =>
                    {
                        return Err(auth_required());
                    }
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Err(RemoteError::Unauthorized {
                            host: self.host.clone(),
                            repository: repository.to_owned(),
                        });
                    }
                    status => {
                        return Err(RemoteError::Status {
                            host: realm,
                            what: "a token request".to_owned(),
                            status,
                            body: response.text().await.unwrap_or_default(),
                        });
                    }
                }
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = response
                    .bytes()
                    .await
                    .map_err(connect_error(realm.clone()))?;
                let body: TokenResponse =
                    serde_json::from_slice(&body).map_err(|source| RemoteError::TokenAnswer {
                        realm: realm.clone(),
                        source,
                    })?;
                let token =
                    body.token
                        .or(body.access_token)
                        .ok_or_else(|| RemoteError::NoToken {
                            realm: realm.clone(),
                        })?;
                Ok(format!("Bearer {token}"))
            }
        }
    }

    async fn status_error(&self, what: &str, response: Response) -> RemoteError {
        let status = response.status();
        let mut body = response.text().await.unwrap_or_default();
        body.truncate(400);
        RemoteError::Status {
            host: self.host.clone(),
            what: what.to_owned(),
            status,
            body: body.trim().to_owned(),
        }
    }

    /// Whether the registry answers at all (and accepts the credentials).
    pub async fn check(&self) -> Result<()> {
        let response = self
            .send("", "pull", &|client| client.get(self.url("/v2/")))
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error("GET /v2/", response).await)
    }

    pub async fn blob_exists(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let response = self
            .send(repository, "pull", &|client| client.head(&url))
            .await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error("a blob check", response).await),
        }
    }

    /// The digest a tag points at, if the tag exists.
    pub async fn tag_digest(&self, repository: &str, tag: &str) -> Result<Option<Digest>> {
        let url = self.url(&format!("/v2/{repository}/manifests/{tag}"));
        let response = self
            .send(repository, "pull", &|client| {
                client.head(&url).header("Accept", MANIFEST_ACCEPT)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(response
                .headers()
                .get("Docker-Content-Digest")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok())),
            _ => Err(self.status_error("a manifest check", response).await),
        }
    }

    /// Uploads a blob from a file: one monolithic PUT after a POST, or a
    /// cross-repository mount when `mount_from` has it; chunked PATCH
    /// uploads for registries that refuse the single PUT. Says whether the
    /// blob was mounted or its bytes were sent.
    pub async fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        path: &Path,
        mount_from: Option<&str>,
        sent: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<TransferOutcome> {
        let mut start = format!("/v2/{repository}/blobs/uploads/");
        if let Some(from) = mount_from {
            start.push_str(&format!("?mount={digest}&from={from}"));
        }
        let url = self.url(&start);
        let response = self
            .send(repository, "pull,push", &|client| {
                client.post(&url).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() == StatusCode::CREATED && mount_from.is_some() {
            return Ok(TransferOutcome::Mounted);
        }
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.status_error("starting an upload", response).await);
        }
        let location = location(&response).ok_or_else(|| RemoteError::NoUploadLocation {
            host: self.host.clone(),
        })?;
        let put_url = with_query(&self.url(&location), &format!("digest={digest}"));
        // Opened here once to report a missing file clearly; each attempt
        // streams from a fresh handle.
        std::fs::File::open(path).map_err(IoError::at("read", path))?;
        let response = self
            .send(repository, "pull,push", &|client| {
                let request = client
                    .put(&put_url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size);
                match std::fs::File::open(path) {
                    // 1 MiB reads: a file's default small chunks cost more than the network here.
                    Ok(file) => {
                        sent.store(0, std::sync::atomic::Ordering::Relaxed);
                        let counted = Counting {
                            inner: tokio::fs::File::from_std(file),
                            count: sent.clone(),
                        };
                        request.body(reqwest::Body::wrap_stream(
                            tokio_util::io::ReaderStream::with_capacity(counted, 1 << 20),
                        ))
                    }
                    Err(_) => request,
                }
            })
            .await?;
        if response.status() == StatusCode::CREATED {
            return Ok(TransferOutcome::Sent);
        }
        if matches!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::RANGE_NOT_SATISFIABLE
                | StatusCode::BAD_REQUEST
        ) {
            self.upload_chunked(repository, digest, path).await?;
            return Ok(TransferOutcome::Sent);
        }
        Err(self.status_error("uploading a blob", response).await)
    }

    /// A fresh upload session, sent in chunks of 8 MiB.
    async fn upload_chunked(&self, repository: &str, digest: &Digest, path: &Path) -> Result<()> {
        use tokio::io::AsyncReadExt;

        const CHUNK: usize = 8 << 20;
        let start = self.url(&format!("/v2/{repository}/blobs/uploads/"));
        let response = self
            .send(repository, "pull,push", &|client| {
                client.post(&start).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self
                .status_error("starting a chunked upload", response)
                .await);
        }
        let mut location = location(&response).ok_or_else(|| RemoteError::NoUploadLocation {
            host: self.host.clone(),
        })?;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(IoError::at("read", path))?;
        let mut offset = 0u64;
        let mut buffer = vec![0; CHUNK];
        loop {
            let read = file
                .read(&mut buffer)
                .await
                .map_err(IoError::at("read", path))?;
            if read == 0 {
                break;
            }
            let chunk = buffer[..read].to_vec();
            let range = format!("{offset}-{}", offset + read as u64 - 1);
            let patch_url = self.url(&location);
            let response = self
                .send(repository, "pull,push", &|client| {
                    client
                        .patch(&patch_url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header("Content-Range", range.as_str())
                        .header(CONTENT_LENGTH, chunk.len())
                        .body(chunk.clone())
                })
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(self.status_error("uploading a chunk", response).await);
            }
            location = location_or(&response, &location);
            offset += read as u64;
        }
        let put_url = with_query(&self.url(&location), &format!("digest={digest}"));
        let response = self
            .send(repository, "pull,push", &|client| {
                client.put(&put_url).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() == StatusCode::CREATED {
            return Ok(());
        }
        Err(self
            .status_error("finishing a chunked upload", response)
            .await)
    }

    /// Sends a manifest as the exact bytes that were hashed.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let response = self
            .send(repository, "pull,push", &|client| {
                client
                    .put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec())
            })
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error("storing a manifest", response).await)
    }

    /// A manifest's bytes and media type, checked against `expected` when
    /// the reference is a digest.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String)> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let response = self
            .send(repository, "pull", &|client| {
                client.get(&url).header("Accept", MANIFEST_ACCEPT)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .status_error(
                    &format!("fetching the manifest {repository}:{reference}"),
                    response,
                )
                .await);
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or(value).trim().to_owned());
        let announced: Option<Digest> = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let bytes = response
            .bytes()
            .await
            .map_err(connect_error(self.host.clone()))?;
        let actual = Digest::of(&bytes);
        let expected = reference
            .parse::<Digest>()
            .ok()
            .filter(|_| reference.starts_with("sha256:"))
            .or(announced);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(RemoteError::DigestMismatch {
                host: self.host.clone(),
                what: format!("the manifest {repository}:{reference}"),
                expected,
                actual,
            });
        }
        let media_type = media_type
            .filter(|media_type| media_type.contains("manifest") || media_type.contains("index"))
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|json| json["mediaType"].as_str().map(str::to_owned))
            })
            .unwrap_or_else(|| oci::MEDIA_TYPE_MANIFEST.to_owned());
        Ok((bytes.to_vec(), media_type))
    }

    /// The response to a `GET` of a blob, refused unless it succeeded.
    async fn blob_response(&self, repository: &str, digest: &Digest) -> Result<reqwest::Response> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let response = self
            .send(repository, "pull", &|client| client.get(&url))
            .await?;
        if !response.status().is_success() {
            return Err(self
                .status_error(&format!("fetching blob {digest}"), response)
                .await);
        }
        Ok(response)
    }

    /// Streams a blob into the store, verifying its digest and size; a
    /// mismatch keeps nothing under the expected digest.
    pub async fn download_blob(
        &self,
        repository: &str,
        descriptor: &oci::Descriptor,
        store: &crate::store::Store,
        on_progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        let mut response = self.blob_response(repository, &descriptor.digest).await?;
        let mut writer = store.blob_writer()?;
        let blobs = store.root().to_owned();
        let (chunks, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let expected = descriptor.clone();
        let hashing =
            tokio::task::spawn_blocking(move || -> std::result::Result<(), StoreError> {
                use std::io::Write;
                while let Some(chunk) = received.blocking_recv() {
                    writer
                        .write_all(&chunk)
                        .map_err(|error| IoError::new("write a blob into", &blobs, error))?;
                    if writer.written() > expected.size {
                        return Err(StoreError::TooLarge {
                            digest: expected.digest,
                            size: expected.size,
                        });
                    }
                }
                writer.commit_expected(&expected.digest, expected.size)
            });
        let mut received_bytes = 0u64;
        let mut reported = 0u64;
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(connect_error(self.host.clone()))?;
            let Some(chunk) = chunk else { break };
            received_bytes += chunk.len() as u64;
            if received_bytes - reported >= 4 << 20 {
                on_progress(received_bytes);
                reported = received_bytes;
            }
            if chunks.send(chunk.to_vec()).await.is_err() {
                break;
            }
        }
        drop(chunks);
        hashing
            .await
            .map_err(RemoteError::BlobWriter)?
            .map_err(|source| RemoteError::RefusedBlob {
                host: self.host.clone(),
                digest: descriptor.digest.clone(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// A small blob (a signature, an attestation) in memory, verified
    /// against its descriptor; one over `limit` bytes is refused unread.
    pub async fn get_document(
        &self,
        repository: &str,
        descriptor: &oci::Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>> {
        if descriptor.size > limit {
            return Err(RemoteError::RefusedBlob {
                host: self.host.clone(),
                digest: descriptor.digest.clone(),
                source: Box::new(StoreError::TooLarge {
                    digest: descriptor.digest.clone(),
                    size: limit,
                }),
            });
        }
        let response = self.blob_response(repository, &descriptor.digest).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(connect_error(self.host.clone()))?;
        let actual = Digest::of(&bytes);
        if actual != descriptor.digest || bytes.len() as u64 != descriptor.size {
            return Err(RemoteError::DigestMismatch {
                host: self.host.clone(),
                what: format!("blob {}", descriptor.digest),
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        Ok(bytes.to_vec())
    }

    /// Every tag of `repository`, page by page (following `Link` headers);
    /// none for a repository the registry does not know.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let mut all = Vec::new();
        let mut next = Some(format!("/v2/{repository}/tags/list?n=1000"));
        while let Some(page) = next.take() {
            let url = self.url(&page);
            let response = self
                .send(repository, "pull", &|client| client.get(&url))
                .await?;
            if response.status() == StatusCode::NOT_FOUND && all.is_empty() {
                return Ok(Vec::new());
            }
            if !response.status().is_success() {
                return Err(self.status_error("listing tags", response).await);
            }
            next = next_page(&response);
            let body = response
                .bytes()
                .await
                .map_err(connect_error(self.host.clone()))?;
            let tags: Tags =
                serde_json::from_slice(&body).map_err(|source| RemoteError::Unreadable {
                    host: self.host.clone(),
                    what: "a tag list".to_owned(),
                    source,
                })?;
            all.extend(tags.tags.unwrap_or_default());
        }
        Ok(all)
    }

    /// Deletes a manifest by digest (and so every tag on it); `false` when
    /// it was not there. Registries refuse this unless deleting is enabled.
    pub async fn delete_manifest(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("/v2/{repository}/manifests/{digest}"));
        let response = self
            .send(repository, "pull,push,delete", &|client| {
                client.delete(&url)
            })
            .await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error("deleting a manifest", response).await),
        }
    }
}

/// The next page of a paginated list: `Link: <URL>; rel="next"`.
fn next_page(response: &Response) -> Option<String> {
    let link = response.headers().get("Link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// An async reader that counts the bytes read through it, for progress.
struct Counting<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.count
            .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        poll
    }
}

/// The error for a request that never got an answer from `host`.
fn connect_error(host: impl Into<String>) -> impl FnOnce(reqwest::Error) -> RemoteError {
    let host = host.into();
    move |source| RemoteError::Connect { host, source }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(5))
}

fn location(response: &Response) -> Option<String> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn location_or(response: &Response, fallback: &str) -> String {
    location(response).unwrap_or_else(|| fallback.to_owned())
}

fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// Runs a future to completion on a runtime made for it (the command line
/// is synchronous; registry I/O is async).
/// The progress events of one blob going to or coming from a registry.
pub(crate) struct BlobTransfer<'a> {
    reporter: &'a dyn Reporter,
    label: &'a str,
    descriptor: &'a oci::Descriptor,
    started: std::time::Instant,
}

impl<'a> BlobTransfer<'a> {
    pub(crate) fn new(
        reporter: &'a dyn Reporter,
        label: &'a str,
        descriptor: &'a oci::Descriptor,
    ) -> Self {
        Self {
            reporter,
            label,
            descriptor,
            started: std::time::Instant::now(),
        }
    }

    /// The blob starts moving (it was not there already).
    pub(crate) fn moving(&self, direction: Direction) {
        self.reporter.report(Event::TransferStarted {
            build: self.label.to_owned(),
            digest: self.descriptor.digest.clone(),
            size: self.descriptor.size,
            direction,
        });
    }

    pub(crate) fn progress(&self, bytes: u64) {
        self.reporter.report(Event::TransferProgress {
            build: self.label.to_owned(),
            digest: self.descriptor.digest.clone(),
            bytes,
        });
    }

    pub(crate) fn finished(self, outcome: TransferOutcome) {
        self.reporter.report(Event::TransferFinished {
            build: self.label.to_owned(),
            digest: self.descriptor.digest.clone(),
            size: self.descriptor.size,
            outcome,
            seconds: self.started.elapsed().as_secs_f64(),
        });
    }
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
        .block_on(future)
}
