//! Which host a process runs on, as far as shared memory is concerned.
//!
//! A handle can only be mapped where its segment exists: on the same boot
//! of the same kernel, with the same tmpfs behind the segment directory
//! (named segments live there unless NDSHM_DIR says otherwise) and the same pid namespace (anonymous segments are
//! reached through `/proc/PID/fd`). The host key hashes exactly those; two
//! processes with equal keys can map each other's segments. The node name
//! goes along so that errors can say which hosts were involved.

use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

/// This host's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The node name (`uname -n`), for messages.
    pub name: String,
    /// Hash of boot id, /dev/shm's file system and pid namespace.
    pub key: u64,
}

impl Host {
    /// `name/key` in hex: what handles carry.
    pub fn label(&self) -> String {
        format!("{}/{:016x}", self.name, self.key)
    }
}

fn compute() -> Host {
    let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let shm_dev = std::fs::metadata("/dev/shm").map(|m| m.dev()).unwrap_or(0);
    let pid_ns = std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).unwrap_or(0);
    let mut bytes = boot.trim().as_bytes().to_vec();
    bytes.extend_from_slice(&shm_dev.to_le_bytes());
    bytes.extend_from_slice(&pid_ns.to_le_bytes());
    Host { name, key: xxhash_rust::xxh3::xxh3_64(&bytes) }
}

/// This process's host (computed once).
pub fn this() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(compute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_labelled() {
        let h = this();
        assert_eq!(h, &compute());
        assert_ne!(h.key, 0);
        assert!(h.label().starts_with(&h.name));
        assert_eq!(h.label().len(), h.name.len() + 17);
    }
}
