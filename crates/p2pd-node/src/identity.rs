//! Where a node's key comes from: a key file in the data directory, or a
//! fresh throwaway key per process.

use std::io::Write;
use std::path::Path;

use p2pd_proto::signal::Identity;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "identity.key";

/// Why the identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("identity file {0} is not 64 hex digits")]
    Malformed(String),
}

/// A fresh random identity.
pub fn throwaway() -> Identity {
    Identity::from_secret(rand::random())
}

/// The identity kept in `data_dir`, created (readable by its owner only) on
/// first use.
pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    let shown = path.display().to_string();
    let io = |source| IdentityError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            let mut secret = [0u8; 32];
            if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(IdentityError::Malformed(shown));
            }
            for (i, byte) in secret.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                    .map_err(|_| IdentityError::Malformed(shown.clone()))?;
            }
            Ok(Identity::from_secret(secret))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let identity = throwaway();
            let hex: String = identity
                .secret_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&path).map_err(io)?;
            file.write_all(hex.as_bytes()).map_err(io)?;
            Ok(identity)
        }
        Err(err) => Err(io(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_identity_survives_restarts_and_throwaways_differ() {
        let dir = std::env::temp_dir().join(format!(
            "p2pd-id-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let first = load_or_create(&dir).expect("created");
        let again = load_or_create(&dir).expect("loaded");
        assert_eq!(first.id(), again.id());
        assert_ne!(throwaway().id(), throwaway().id());
        std::fs::write(dir.join(KEY_FILE), "nonsense").expect("overwrite");
        assert!(matches!(
            load_or_create(&dir),
            Err(IdentityError::Malformed(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
