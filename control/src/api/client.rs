//! The CLI side of the local API: one HTTP/1 request per connection over
//! the Unix socket (hyper's client connection, no pool needed locally).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::wire::{ErrorKind, WireError};

#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(WireError::unavailable(format!(
                "cannot reach the shoal daemon at {} ({e}); is `shoal daemon` running?",
                self.socket.display()
            )))
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "shoal")
            .header("content-type", "application/json")
            .body(Full::new(bytes))?;
        let resp = sender
            .send_request(req)
            .await
            .context("request to the shoal daemon")?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            // The daemon's error, kind and all, so callers decide on the
            // kind (`WireError::kind_of`), never on the words.
            let e = match serde_json::from_slice::<WireError>(&body) {
                Ok(mut e) => {
                    if e.kind == ErrorKind::Internal && status != StatusCode::INTERNAL_SERVER_ERROR
                    {
                        e.kind = ErrorKind::from_http_status(status.as_u16());
                    }
                    e
                }
                Err(_) => WireError::new(
                    ErrorKind::from_http_status(status.as_u16()),
                    format!(
                        "daemon answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    ),
                ),
            };
            return Err(e.into());
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("bad answer from the daemon to {path}"))
    }
}
