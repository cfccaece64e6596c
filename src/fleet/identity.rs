//! Each device's ed25519 key: made at first start in the state directory
//! (`<state_dir>/fleet/device.key`, the 32-byte secret seed in hex, mode 0600), never in
//! the package; its public half is what other devices list as trusted
//! (`ed25519:<base64url>`, what `lsskd-edge fleet id` prints).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::TryRngCore;

use super::{FleetError, io, write_private};

/// A device's public key, as configuration lists it: `ed25519:` and its 32 bytes in
/// unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl PublicKey {
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", URL_SAFE_NO_PAD.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for PublicKey {
    type Err = String;

    /// `ed25519:<43 characters of base64url>`; anything else is refused with what is wrong.
    fn from_str(s: &str) -> Result<Self, String> {
        let b64 = s
            .strip_prefix("ed25519:")
            .ok_or_else(|| format!("`{s}` is not a device key: it must start with `ed25519:`"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| format!("`{s}`: not base64url ({e})"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("`{s}`: {} bytes, a key has 32", b.len()))?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| format!("`{s}`: not a valid ed25519 public key"))
    }
}

/// The device's own signing key.
pub struct DeviceKey {
    signing: SigningKey,
}

impl DeviceKey {
    /// Where the key lives in a state directory.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("fleet").join("device.key")
    }

    /// The state directory's key, made (from the operating system's random bytes, written
    /// atomically, mode 0600) when there is none yet.
    pub fn load_or_create(state_dir: &Path) -> Result<DeviceKey, FleetError> {
        let path = Self::path_in(state_dir);
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|message| FleetError::Corrupt {
                path: path.clone(),
                message,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::rngs::OsRng
                    .try_fill_bytes(&mut seed)
                    .map_err(|e| FleetError::Random(e.to_string()))?;
                write_private(&path, hex::encode(seed).as_bytes())?;
                Ok(DeviceKey {
                    signing: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn parse(text: &str) -> Result<DeviceKey, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, a key has 32", b.len()))?;
        Ok(DeviceKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// A key from a fixed seed (tests and benchmarks only make their fleets this way).
    pub fn from_seed(seed: [u8; 32]) -> DeviceKey {
        DeviceKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = DeviceKey::load_or_create(dir.path()).expect("made");
        let b = DeviceKey::load_or_create(dir.path()).expect("read");
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(DeviceKey::path_in(dir.path()))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = tempfile::tempdir().expect("tempdir");
        let c = DeviceKey::load_or_create(other.path()).expect("made");
        assert_ne!(a.public(), c.public(), "each device its own key");
        fs::write(DeviceKey::path_in(dir.path()), "zz").expect("write");
        let e = DeviceKey::load_or_create(dir.path())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("device.key: not hex"), "{e}");
    }

    #[test]
    fn public_keys_print_and_parse_and_bad_ones_say_why() {
        let k = DeviceKey::from_seed([7; 32]).public();
        let text = k.to_string();
        assert!(
            text.starts_with("ed25519:") && text.len() == 8 + 43,
            "{text}"
        );
        assert_eq!(text.parse::<PublicKey>(), Ok(k));
        for (bad, why) in [
            ("ssh-ed25519 AAAA", "must start with `ed25519:`"),
            ("ed25519:!!", "not base64url"),
            ("ed25519:AAAA", "3 bytes, a key has 32"),
        ] {
            let e = bad.parse::<PublicKey>().expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
