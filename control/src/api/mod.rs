//! The daemon's local API: JSON over HTTP/1 on a Unix socket (mode 0600).
//! The CLI, the lab, the CNI plugin and the Docker driver use it; the shapes it carries
//! are `crate::wire`'s.

pub mod attachments;
pub mod client;
pub mod orchestration;
pub mod respond;
pub mod server;

pub const DEFAULT_SOCKET: &str = "/run/shoal/shoal.sock";

/// The socket the CLI talks to: `--socket`, else `$SHOAL_SOCKET` (the lab
/// sets it for `shoal lab exec NODE -- shoal ...`), else the default.
pub fn socket_path(flag: Option<&std::path::Path>) -> std::path::PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    std::env::var_os("SHOAL_SOCKET")
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}
