//! The service's own keys. Configured keys always win; in embedded SQLite mode a missing key is
//! generated once into the data directory (mode 0600, directory 0700) and read back on later
//! starts. This is the only side effect configuration has.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use zivio_core::keys::{PlatformKeys, SecretsKey};

use crate::config::Config;

pub const PLATFORM_KEY_FILE: &str = "platform.key";
pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// Where the platform key came from, for the start-up banner (never the key itself).
#[derive(Debug, Clone)]
pub enum KeySource {
    Configured,
    File(PathBuf),
}

pub struct ServiceKeys {
    pub platform: PlatformKeys,
    pub platform_source: KeySource,
    pub secrets: SecretsKey,
}

/// Creates the data directory (0700) if it is missing; warns if an existing one is readable
/// by others.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot create data directory {}", dir.display()));
        }
    }
    let mode = fs::metadata(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            data_dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "the data directory is accessible to other users; it holds keys: chmod 700 it"
        );
    }
    Ok(())
}

/// The configured keys, or in embedded mode those of the data directory, generated on first use.
pub fn load(config: &Config) -> anyhow::Result<ServiceKeys> {
    let embedded = config.database.is_embedded();
    let (platform, platform_source) = match &config.platform_keys {
        Some(keys) => (keys.clone(), KeySource::Configured),
        None if embedded => {
            let path = config.data_dir.join(PLATFORM_KEY_FILE);
            let text = read_or_create(&path, || PlatformKeys::generate(random()))?;
            let keys = PlatformKeys::parse(&text)
                .with_context(|| format!("{} holds no valid platform key", path.display()))?;
            (keys, KeySource::File(path))
        }
        None => bail!("ZIVIO_WEBHOOKS_PLATFORM_KEY is required with a PostgreSQL database"),
    };
    let secrets = match &config.secrets_key {
        Some(key) => key.clone(),
        None if embedded => {
            let path = config.data_dir.join(SECRETS_KEY_FILE);
            let text = read_or_create(&path, || SecretsKey::from_bytes(random()).to_base64())?;
            SecretsKey::parse(&text)
                .with_context(|| format!("{} holds no valid secrets key", path.display()))?
        }
        None => bail!("ZIVIO_WEBHOOKS_SECRETS_KEY is required with a PostgreSQL database"),
    };
    Ok(ServiceKeys {
        platform,
        platform_source,
        secrets,
    })
}

/// Reads a key file, or creates it exclusively with mode 0600. If another process creates it
/// first, that one's key is read.
fn read_or_create(path: &Path, generate: impl FnOnce() -> String) -> anyhow::Result<String> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            let key = generate();
            file.write_all(format!("{key}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write key file {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a key file");
            Ok(key)
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read key file {}", path.display()))?;
            Ok(text.trim().to_owned())
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot create key file {}", path.display()))
        }
    }
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        prepare_data_dir(&data).unwrap();
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let path = data.join(SECRETS_KEY_FILE);
        let first = read_or_create(&path, || "first".into()).unwrap();
        let second = read_or_create(&path, || "second".into()).unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("first", "first"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
