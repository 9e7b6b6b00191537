//! Signing secrets: minted here, shown once to the admin, kept in `webhook_secrets`
//! (never in events, NATS, logs or error bodies), sealed with AES-256-GCM when
//! `WEBHOOK_SECRETS_KEY` is set, and used to sign each delivery.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::PgPool;
use uuid::Uuid;

/// How long a replaced secret keeps signing beside its successor.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;

/// A fresh secret: `whsec_` and 32 random bytes in URL-safe base64. The HMAC key is this
/// text's UTF-8 bytes.
pub fn mint() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    Ok(format!("whsec_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The `Escrow-Signature` header of `body` sent at unix second `t`: `t=<t>` and one
/// `v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` per secret.
pub fn signature_header(secrets: &[String], t: i64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for s in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(t.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        header.push_str(",v1=");
        header.push_str(&hex::encode(ctx.sign().as_ref()));
    }
    header
}

/// Seals and opens secrets at rest. Without a key, secrets are stored as they are (the
/// database's own access control protects them, as it does password hashes).
#[derive(Clone)]
pub struct SecretBox {
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("sealed", &self.key.is_some())
            .finish()
    }
}

const PLAIN: &str = "plain:";
const SEALED: &str = "aes256gcm:";

impl SecretBox {
    /// A box with `key`: 32 bytes written as 64 hex digits or in base64.
    pub fn new(key: Option<&str>) -> anyhow::Result<Self> {
        let Some(raw) = key.map(str::trim).filter(|k| !k.is_empty()) else {
            return Ok(SecretBox { key: None });
        };
        let bytes = hex::decode(raw)
            .ok()
            .or_else(|| STANDARD.decode(raw).ok())
            .ok_or_else(|| {
                anyhow::anyhow!("WEBHOOK_SECRETS_KEY must be 64 hex digits or base64")
            })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("WEBHOOK_SECRETS_KEY must be 32 bytes"))?;
        Ok(SecretBox { key: Some(key) })
    }

    fn aead(key: &[u8; 32]) -> anyhow::Result<LessSafeKey> {
        let k = UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow::anyhow!("bad key"))?;
        Ok(LessSafeKey::new(k))
    }

    /// The stored form of `secret`.
    pub fn seal(&self, secret: &str) -> anyhow::Result<String> {
        let Some(key) = &self.key else {
            return Ok(format!("{PLAIN}{secret}"));
        };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("no randomness available"))?;
        let mut data = secret.as_bytes().to_vec();
        Self::aead(key)?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(format!("{SEALED}{}", STANDARD.encode(out)))
    }

    /// The secret of a stored form.
    pub fn open(&self, stored: &str) -> anyhow::Result<String> {
        if let Some(s) = stored.strip_prefix(PLAIN) {
            return Ok(s.to_owned());
        }
        let sealed = stored
            .strip_prefix(SEALED)
            .ok_or_else(|| anyhow::anyhow!("unknown secret format"))?;
        let key = self.key.as_ref().ok_or_else(|| {
            anyhow::anyhow!("a webhook secret is sealed but WEBHOOK_SECRETS_KEY is not set")
        })?;
        let bytes = STANDARD.decode(sealed)?;
        if bytes.len() < NONCE_LEN {
            anyhow::bail!("sealed secret too short");
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("nonce"))?;
        let mut data = rest.to_vec();
        let plain = Self::aead(key)?
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| {
                anyhow::anyhow!("a webhook secret does not open with WEBHOOK_SECRETS_KEY")
            })?;
        Ok(String::from_utf8(plain.to_vec())?)
    }
}

/// Stores `secret` as the endpoint's current one.
pub async fn store(
    pool: &PgPool,
    sbox: &SecretBox,
    webhook: Uuid,
    secret: &str,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO webhook_secrets (webhook_id, secret) VALUES ($1, $2)")
        .bind(webhook)
        .bind(sbox.seal(secret)?)
        .execute(pool)
        .await?;
    Ok(())
}

/// Makes `secret` the endpoint's current one; the secrets current until now sign until
/// `previous_until`. Returns nothing else: the caller shows `secret` once.
pub async fn rotate(
    pool: &PgPool,
    sbox: &SecretBox,
    webhook: Uuid,
    secret: &str,
    previous_until: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE webhook_secrets SET expires_at = $2 WHERE webhook_id = $1 \
         AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(webhook)
    .bind(previous_until)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO webhook_secrets (webhook_id, secret) VALUES ($1, $2)")
        .bind(webhook)
        .bind(sbox.seal(secret)?)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The secrets that sign now, newest first.
pub async fn signing(
    pool: &PgPool,
    sbox: &SecretBox,
    webhook: Uuid,
) -> anyhow::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT secret FROM webhook_secrets WHERE webhook_id = $1 \
         AND (expires_at IS NULL OR expires_at > now()) ORDER BY id DESC",
    )
    .bind(webhook)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|(s,)| sbox.open(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_its_key_only() {
        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let sbox = SecretBox::new(Some(key)).expect("key");
        let sealed = sbox.seal("whsec_abc").expect("seals");
        assert!(sealed.starts_with(SEALED) && !sealed.contains("whsec_abc"));
        assert_eq!(sbox.open(&sealed).expect("opens"), "whsec_abc");
        let other = SecretBox::new(Some(&"ff".repeat(32))).expect("key");
        assert!(other.open(&sealed).is_err());
        assert!(SecretBox::new(None).expect("none").open(&sealed).is_err());
        assert!(SecretBox::new(Some("short")).is_err());
    }

    #[test]
    fn the_signature_is_the_hmac_of_time_dot_body() {
        // HMAC-SHA256("key", "1.{}") computed independently (Python's hmac module).
        let h = signature_header(&["key".into()], 1, b"{}");
        assert_eq!(
            h,
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
        assert_eq!(
            signature_header(&["a".into(), "b".into()], 5, b"x")
                .matches("v1=")
                .count(),
            2
        );
        let minted = mint().expect("random");
        assert!(minted.starts_with("whsec_") && minted.len() >= 6 + 43);
    }
}
