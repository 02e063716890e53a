//! Webhook secrets at rest: sealed with XChaCha20-Poly1305 under the operator's master key
//! before they reach the database, opened when a row is read. A sealed value names the key
//! that sealed it, `enc1:<key id>:<base64 of nonce ‖ ciphertext>`, so that several keys can be
//! loaded at once (a rotation re-seals under the new one while the old still opens).
//! A value without the prefix was written before encryption existed; `Store::open` re-seals
//! those at start.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit};
use sha2::{Digest, Sha256};

use super::{StoreError, StoreResult};

const PREFIX: &str = "enc1:";
const NONCE: usize = 24;

/// A 32-byte master key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        codmir_core::id::random_bytes(&mut key);
        Self(key)
    }

    /// A key written as base64 (what `generate` gives and key files hold).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(raw.trim())
            .map_err(|e| format!("a master key is 32 bytes in base64: {e}"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "a master key is 32 bytes in base64, this one is {} bytes",
                b.len()
            )
        })?;
        Ok(Self(key))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A short public name for the key (not secret: a hash prefix), stored with each value.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..4])
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

/// The keys a store seals and opens with: the first seals, all of them open. Read from a key
/// file, the ring reads it again when it meets a value sealed under a key it does not have:
/// that is how a running server learns of `codmir secrets rotate-master-key`.
pub struct KeyRing {
    keys: RwLock<Vec<(String, XChaCha20Poly1305)>>,
    file: Option<PathBuf>,
    /// When the file was last read again: a value under a key that is nowhere (a wrong file)
    /// must not make every read of it read the file too.
    reloaded: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The least time between two readings of the key file again.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({:?})", self.ids())
    }
}

fn ciphers(keys: &[MasterKey]) -> Vec<(String, XChaCha20Poly1305)> {
    keys.iter()
        .map(|k| (k.id(), XChaCha20Poly1305::new(&k.0.into())))
        .collect()
}

/// The keys of a key file: one base64 key per line, the current one first.
pub fn read_key_file(path: &Path) -> Result<Vec<MasterKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the master key file {}: {e}", path.display()))?;
    let keys = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(MasterKey::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if keys.is_empty() {
        return Err(format!("{} holds no master key", path.display()));
    }
    Ok(keys)
}

/// Writes a key file readable by its owner only, atomically (a temp file renamed over it).
pub fn write_key_file(path: &Path, keys: &[MasterKey]) -> std::io::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let text: String = keys.iter().map(|k| k.to_base64() + "\n").collect();
    std::io::Write::write_all(&mut options.open(&tmp)?, text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

impl KeyRing {
    /// `keys[0]` seals; the others still open what they sealed.
    pub fn new(keys: &[MasterKey]) -> Self {
        assert!(!keys.is_empty(), "a key ring needs a key");
        Self {
            keys: RwLock::new(ciphers(keys)),
            file: None,
            reloaded: std::sync::Mutex::new(None),
        }
    }

    /// The keys of `path`, read again when a value names a key the ring lacks.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        Ok(Self {
            keys: RwLock::new(ciphers(&read_key_file(path)?)),
            file: Some(path.to_path_buf()),
            reloaded: std::sync::Mutex::new(None),
        })
    }

    fn ids(&self) -> Vec<String> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> String {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)[0]
            .0
            .clone()
    }

    pub fn seal(&self, plain: &str) -> String {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let (id, cipher) = &keys[0];
        let mut nonce = [0u8; NONCE];
        codmir_core::id::random_bytes(&mut nonce);
        // Encrypting a short string under a valid key and a fresh nonce cannot fail.
        let sealed = cipher
            .encrypt(&nonce.into(), plain.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{id}:{}", STANDARD.encode(out))
    }

    /// Opens a stored value; one without the prefix is returned as it is (written before
    /// encryption, re-sealed at start).
    pub fn open(&self, stored: &str) -> StoreResult<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let corrupt = |why: &str| StoreError::Corrupt(format!("a sealed value: {why}"));
        let (id, data) = rest.split_once(':').ok_or_else(|| corrupt("no key id"))?;
        let bytes = STANDARD.decode(data).map_err(|_| corrupt("not base64"))?;
        if bytes.len() < NONCE {
            return Err(corrupt("too short"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| corrupt("bad nonce"))?;
        if !self.has(id) {
            self.reload();
        }
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let (_, cipher) = keys.iter().find(|(k, _)| k == id).ok_or_else(|| {
            StoreError::failed(format!(
                "a value is sealed under master key {id}, which this server was not \
                 given (it has {:?})",
                keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()
            ))
        })?;
        let plain = cipher
            .decrypt(&nonce.into(), sealed)
            .map_err(|_| corrupt("it does not open under its key (tampered with?)"))?;
        String::from_utf8(plain).map_err(|_| corrupt("not UTF-8"))
    }

    fn has(&self, id: &str) -> bool {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(k, _)| k == id)
    }

    /// Reads the key file again (a rotation wrote a new key at its top).
    fn reload(&self) {
        let Some(file) = &self.file else { return };
        {
            let mut last = self.reloaded.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < RELOAD_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match read_key_file(file) {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = ciphers(&keys);
                tracing::info!(file = %file.display(), current = %keys[0].id(), "master keys read again");
            }
            Err(e) => tracing::warn!(error = %e, "could not read the master key file again"),
        }
    }

    /// Whether `stored` is sealed under the current key already.
    pub fn is_current(&self, stored: &str) -> bool {
        let current = self.current_id();
        stored
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(id, _)| id == current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_under_their_key_only_and_say_which() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        let ring = KeyRing::new(std::slice::from_ref(&a));
        let sealed = ring.seal("your-webhook-secret");
        assert!(sealed.starts_with(&format!("enc1:{}:", a.id())));
        assert!(!sealed.contains("your-webhook-secret"));
        assert_ne!(
            sealed,
            ring.seal("your-webhook-secret"),
            "a fresh nonce each time"
        );
        assert_eq!(ring.open(&sealed).unwrap(), "your-webhook-secret");
        assert_eq!(
            ring.open("legacy-plain-secret").unwrap(),
            "legacy-plain-secret"
        );
        assert!(ring.is_current(&sealed));

        let rotated = KeyRing::new(&[b.clone(), a.clone()]);
        assert_eq!(
            rotated.open(&sealed).unwrap(),
            "your-webhook-secret",
            "old keys open"
        );
        assert!(!rotated.is_current(&sealed));
        assert!(
            KeyRing::new(&[b]).open(&sealed).is_err(),
            "an unknown key is an error"
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(ring.open(&tampered).is_err());
        assert_eq!(MasterKey::parse(&a.to_base64()).unwrap().id(), a.id());
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
    }

    #[test]
    fn a_ring_from_a_file_learns_a_rotation_when_it_meets_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("codmir.db.key");
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        write_key_file(&file, std::slice::from_ref(&old)).unwrap();
        let running = KeyRing::from_file(&file).unwrap();
        let before = running.seal("s3cret-before-rotation");
        // A rotation puts the new key first and keeps the old one.
        write_key_file(&file, &[new.clone(), old.clone()]).unwrap();
        let after = KeyRing::from_file(&file)
            .unwrap()
            .seal("s3cret-after-rotation");
        assert_eq!(running.open(&after).unwrap(), "s3cret-after-rotation");
        assert_eq!(
            running.current_id(),
            new.id(),
            "and seals with the new key from then on"
        );
        assert_eq!(running.open(&before).unwrap(), "s3cret-before-rotation");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
