//! containerd's `runtimeoptions.v1.Options`: what its CRI plugin sends a runtime whose
//! `runtime_type` is not runc's, in place of `containerd.runc.v1.Options`.
//!
//! `containerd-shim-protos` 0.12 does not carry the type, so its three fields are read and
//! written here with rust-protobuf's coded streams. Fields (containerd's
//! `pkg/runtimeoptions/v1/api.proto`, verified in the 1.7 and 2.x binaries' struct tags):
//! 1 `type_url` string, 2 `config_path` string, 3 `config_body` bytes (since 1.7: the runtime's
//! `options` TOML table, re-encoded, when `config_path` is empty).

use protobuf::{CodedInputStream, CodedOutputStream};

/// The `Any` type URL containerd gives the message.
pub const TYPE_URL: &str = "runtimeoptions.v1.Options";

const TYPE_URL_FIELD: u32 = 1;
const CONFIG_PATH_FIELD: u32 = 2;
const CONFIG_BODY_FIELD: u32 = 3;
/// Protobuf's wire type of strings, bytes and messages.
const LENGTH_DELIMITED: u32 = 2;

/// `runtimeoptions.v1.Options`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub type_url: String,
    /// A file holding the runtime's configuration (containerd 1.6's only way to pass any).
    pub config_path: String,
    /// The runtime's `options` table as TOML text.
    pub config_body: Vec<u8>,
}

impl RuntimeOptions {
    /// Decodes the message; unknown fields are skipped, as protobuf requires.
    pub fn parse_from_bytes(bytes: &[u8]) -> protobuf::Result<RuntimeOptions> {
        let mut is = CodedInputStream::from_bytes(bytes);
        let mut out = RuntimeOptions::default();
        while let Some(tag) = is.read_raw_tag_or_eof()? {
            let (field, wire_type) = (tag >> 3, tag & 7);
            let known = matches!(
                field,
                TYPE_URL_FIELD | CONFIG_PATH_FIELD | CONFIG_BODY_FIELD
            );
            if !known || wire_type != LENGTH_DELIMITED {
                // A known field with another wire type is malformed: skipping it would hide
                // that, so only truly unknown fields are skipped.
                if known {
                    return Err(protobuf::Error::from(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("field {field} has wire type {wire_type}, not length-delimited"),
                    )));
                }
                protobuf::rt::skip_field_for_tag(tag, &mut is)?;
                continue;
            }
            match field {
                TYPE_URL_FIELD => out.type_url = is.read_string()?,
                CONFIG_PATH_FIELD => out.config_path = is.read_string()?,
                _ => out.config_body = is.read_bytes()?,
            }
        }
        Ok(out)
    }

    /// Encodes the message (proto3: empty fields are left out).
    pub fn write_to_bytes(&self) -> protobuf::Result<Vec<u8>> {
        let mut buf = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut buf);
            if !self.type_url.is_empty() {
                os.write_string(TYPE_URL_FIELD, &self.type_url)?;
            }
            if !self.config_path.is_empty() {
                os.write_string(CONFIG_PATH_FIELD, &self.config_path)?;
            }
            if !self.config_body.is_empty() {
                os.write_bytes(CONFIG_BODY_FIELD, &self.config_body)?;
            }
            os.flush()?;
        }
        Ok(buf)
    }

    /// The message in an `Any` with containerd's type URL.
    pub fn to_any(&self) -> protobuf::Result<crate::api::Any> {
        Ok(crate::api::Any {
            type_url: TYPE_URL.to_string(),
            value: self.write_to_bytes()?,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let o = RuntimeOptions {
            type_url: "x".into(),
            config_path: "/etc/tether.toml".into(),
            config_body: b"BinaryName = \"crun\"\n".to_vec(),
        };
        let bytes = o.write_to_bytes().expect("encode");
        assert_eq!(RuntimeOptions::parse_from_bytes(&bytes).expect("decode"), o);
        assert_eq!(
            RuntimeOptions::parse_from_bytes(&[]).expect("empty"),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn matches_protobufs_encoding_and_skips_unknown_fields() {
        // field 3, length-delimited (0x1a), 2 bytes; then field 9 varint 150 (0x48 0x96 0x01).
        let bytes = [0x1a, 0x02, b'a', b'b', 0x48, 0x96, 0x01];
        let o = RuntimeOptions::parse_from_bytes(&bytes).expect("decode");
        assert_eq!(o.config_body, b"ab");
        assert_eq!(
            RuntimeOptions {
                config_body: b"ab".to_vec(),
                ..Default::default()
            }
            .write_to_bytes()
            .expect("encode"),
            &bytes[..4]
        );
    }

    #[test]
    fn refuses_malformed_input() {
        // Field 1 as a varint.
        assert!(RuntimeOptions::parse_from_bytes(&[0x08, 0x01]).is_err());
        // A length past the end.
        assert!(RuntimeOptions::parse_from_bytes(&[0x12, 0x05, b'a']).is_err());
        // A type_url that is not UTF-8.
        assert!(RuntimeOptions::parse_from_bytes(&[0x0a, 0x01, 0xff]).is_err());
        // Garbage.
        assert!(RuntimeOptions::parse_from_bytes(&[0xff; 16]).is_err());
    }
}
