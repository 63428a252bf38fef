//! The API token: made at start, kept in a file only its owner can read,
//! so a local program the user trusts (or a page the user gives it to)
//! can make browser requests the access rules would otherwise refuse.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The token file's name inside its directory.
pub const FILE_NAME: &str = "rest-token";

/// Why the token could not be kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A file system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The directory is not private to this user.
    #[error("{0}: not a directory owned by this user and closed to others")]
    NotPrivate(PathBuf),
}

/// A fresh random token: 32 bytes as 64 hex digits.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the token is kept when no data directory is configured:
/// `$XDG_RUNTIME_DIR/p2pd`, else `<temp>/p2pd-<uid>`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("p2pd"),
        None => std::env::temp_dir().join(format!("p2pd-{}", nix::unistd::getuid())),
    }
}

/// Writes `token` to `dir/rest-token`, readable by its owner only, and
/// returns the file's path. The directory is created private when
/// missing; an existing one must be this user's and closed to others,
/// or another user could read or replace the token.
pub fn store(dir: &Path, token: &str) -> Result<PathBuf, TokenError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TokenError::Io { path, source }
    };
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(source) => return Err(io(dir)(source)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io(dir))?;
    let mine = meta.uid() == nix::unistd::getuid().as_raw();
    if !meta.is_dir() || !mine || meta.permissions().mode() & 0o022 != 0 {
        return Err(TokenError::NotPrivate(dir.to_owned()));
    }
    let path = dir.join(FILE_NAME);
    let partial = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io(&partial))?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .map_err(io(&partial))?;
    fs::rename(&partial, &path).map_err(io(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_file_is_private() {
        let dir = std::env::temp_dir().join(format!("p2pd-token-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = store(&dir, "abc").expect("store");
        assert_eq!(fs::read_to_string(&path).expect("read"), "abc\n");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&dir).expect("meta").permissions().mode() & 0o777,
            0o700
        );
        // A directory others may write to is refused.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(matches!(store(&dir, "x"), Err(TokenError::NotPrivate(_))));
        fs::remove_dir_all(&dir).expect("clean");
    }
}
