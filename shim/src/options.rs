//! The runtime options containerd hands the shim with `Create`, whichever form they take:
//!
//! - `containerd.runc.v1.Options`: what `ctr` and the CRI plugin send for runc's runtime types,
//!   and what any client may send us;
//! - `runtimeoptions.v1.Options`: what the CRI plugin sends for every other `runtime_type`
//!   (ours): the runtime's `options` TOML table as `config_body` (containerd 1.7 and later), or a
//!   `config_path` naming a TOML file (`ctr run --runtime-config-path`, or `ConfigPath` in the
//!   options table: containerd 1.6's only way, it sends no body). The keys are containerd's runc
//!   option names (`BinaryName`, `Root`, `SystemdCgroup`, ...);
//! - nothing: the defaults.

use crate::error::{Result, ShimError};
use protobuf::{Message, MessageField, UnknownValueRef};
use tether_protocol::api::runc_options::Options as RuncOptions;
use tether_protocol::api::{type_url, Any};
use tether_protocol::runtime_options::{RuntimeOptions as Wrapper, TYPE_URL as WRAPPER_URL};

/// The runc options' `criu_path` (field 8): containerd 1.6/1.7 still send it, the 0.12 protos
/// (containerd 2.x's) no longer name it, so it arrives as an unknown field.
const RUNC_CRIU_PATH_FIELD: u32 = 8;

/// Runtime options, whichever form they came in; an empty field means the runtime's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub criu_path: String,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub shim_cgroup: String,
    pub io_uid: u32,
    pub io_gid: u32,
    pub criu_image_path: String,
    pub criu_work_path: String,
}

/// The options in a request's `Any`: runc's, the runtimeoptions wrapper (TOML), or none.
/// Another type, bytes that do not decode, bad TOML or a key of the wrong type are
/// `InvalidArgument`, naming what was wrong.
pub fn from_any(any: &MessageField<Any>) -> Result<RuntimeOptions> {
    let Some(any) = any.as_ref() else {
        return Ok(RuntimeOptions::default());
    };
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(RuntimeOptions::default());
    }
    let runc = type_url::<RuncOptions>();
    match any.type_url.trim_start_matches("type.googleapis.com/") {
        url if url == runc => from_runc(&any.value),
        WRAPPER_URL => from_wrapper(&any.value),
        _ => Err(ShimError::InvalidArgument(format!(
            "runtime options of type {:?} are not supported (want {runc} or {WRAPPER_URL})",
            any.type_url
        ))),
    }
}

/// Whether an `Any` of this type URL holds runtime options we read.
pub fn is_options_type(url: &str) -> bool {
    let url = url.trim_start_matches("type.googleapis.com/");
    url == type_url::<RuncOptions>() || url == WRAPPER_URL
}

fn from_runc(bytes: &[u8]) -> Result<RuntimeOptions> {
    let o = RuncOptions::parse_from_bytes(bytes).map_err(|e| {
        ShimError::InvalidArgument(format!("malformed runtime options ({}): {e}", {
            type_url::<RuncOptions>()
        }))
    })?;
    let criu_path = match o.special_fields.unknown_fields().get(RUNC_CRIU_PATH_FIELD) {
        Some(UnknownValueRef::LengthDelimited(b)) => String::from_utf8(b.to_vec())
            .map_err(|_| invalid_key("CriuPath", "is not UTF-8 text"))?,
        _ => String::new(),
    };
    Ok(RuntimeOptions {
        binary_name: o.binary_name,
        root: o.root,
        systemd_cgroup: o.systemd_cgroup,
        criu_path,
        no_pivot_root: o.no_pivot_root,
        no_new_keyring: o.no_new_keyring,
        shim_cgroup: o.shim_cgroup,
        io_uid: o.io_uid,
        io_gid: o.io_gid,
        criu_image_path: o.criu_image_path,
        criu_work_path: o.criu_work_path,
    })
}

/// A runtime's TOML options are a few lines; this bounds what a `config_path` may make us read.
const MAX_CONFIG_FILE: u64 = 1 << 20;

fn from_wrapper(bytes: &[u8]) -> Result<RuntimeOptions> {
    let w = Wrapper::parse_from_bytes(bytes).map_err(|e| {
        ShimError::InvalidArgument(format!("malformed runtime options ({WRAPPER_URL}): {e}"))
    })?;
    // containerd sends the body only when there is no path; a path wins if both came.
    if !w.config_path.is_empty() {
        let bytes = crate::files::read_regular(
            std::path::Path::new(&w.config_path),
            MAX_CONFIG_FILE,
            "config_path",
        )
        .and_then(|b| String::from_utf8(b).map_err(|e| ShimError::InvalidArgument(e.to_string())));
        let text = bytes.map_err(|e| {
            ShimError::InvalidArgument(format!(
                "runtime options: cannot read config_path {}: {e}",
                w.config_path
            ))
        })?;
        return from_toml(&text, &w.config_path);
    }
    let text = std::str::from_utf8(&w.config_body).map_err(|e| {
        ShimError::InvalidArgument(format!(
            "runtime options: config_body is not UTF-8 text: {e}"
        ))
    })?;
    from_toml(text, "config_body")
}

/// The options from TOML text (`origin` names it in errors): containerd's runc option names,
/// unknown keys ignored (another runtime's options table may hold more).
pub fn from_toml(text: &str, origin: &str) -> Result<RuntimeOptions> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ShimError::InvalidArgument(format!(
            "runtime options: {origin} is not valid TOML: {}",
            e.message()
        ))
    })?;
    let mut o = RuntimeOptions::default();
    for (key, value) in &table {
        match key.as_str() {
            "BinaryName" => o.binary_name = string(key, value)?,
            "Root" => o.root = string(key, value)?,
            "SystemdCgroup" => o.systemd_cgroup = boolean(key, value)?,
            "CriuPath" => o.criu_path = string(key, value)?,
            "NoPivotRoot" => o.no_pivot_root = boolean(key, value)?,
            "NoNewKeyring" => o.no_new_keyring = boolean(key, value)?,
            "ShimCgroup" => o.shim_cgroup = string(key, value)?,
            "IoUid" => o.io_uid = id(key, value)?,
            "IoGid" => o.io_gid = id(key, value)?,
            "CriuImagePath" => o.criu_image_path = string(key, value)?,
            "CriuWorkPath" => o.criu_work_path = string(key, value)?,
            _ => log::debug!("runtime options: ignoring unknown key {key:?} in {origin}"),
        }
    }
    Ok(o)
}

fn invalid_key(key: &str, why: &str) -> ShimError {
    ShimError::InvalidArgument(format!("runtime option {key} {why}"))
}

fn string(key: &str, v: &toml::Value) -> Result<String> {
    v.as_str()
        .map(String::from)
        .ok_or_else(|| invalid_key(key, &format!("must be a string, not {}", v.type_str())))
}

fn boolean(key: &str, v: &toml::Value) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| invalid_key(key, &format!("must be a boolean, not {}", v.type_str())))
}

/// A uid or gid: an integer in `0..=u32::MAX`.
fn id(key: &str, v: &toml::Value) -> Result<u32> {
    let n = v
        .as_integer()
        .ok_or_else(|| invalid_key(key, &format!("must be an integer, not {}", v.type_str())))?;
    u32::try_from(n).map_err(|_| invalid_key(key, &format!("is out of range: {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ShimError;
    use tether_protocol::api::pack_any;

    fn wrapper_any(body: &str) -> MessageField<Any> {
        let w = Wrapper {
            config_body: body.as_bytes().to_vec(),
            ..Default::default()
        };
        MessageField::some(w.to_any().expect("encode"))
    }

    fn invalid(r: Result<RuntimeOptions>) -> String {
        match r {
            Err(ShimError::InvalidArgument(m)) => m,
            other => panic!("want InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn none_and_empty_give_the_defaults() {
        assert_eq!(
            from_any(&MessageField::none()).expect("none"),
            RuntimeOptions::default()
        );
        assert_eq!(
            from_any(&MessageField::some(Any::default())).expect("empty Any"),
            RuntimeOptions::default()
        );
        // containerd 1.6's CRI plugin: the wrapper with nothing in it.
        assert_eq!(
            from_any(&wrapper_any("")).expect("empty wrapper"),
            RuntimeOptions::default()
        );
        assert_eq!(
            from_any(&MessageField::some(Any {
                type_url: WRAPPER_URL.into(),
                ..Default::default()
            }))
            .expect("wrapper with no bytes"),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn runc_options() {
        let mut o = RuncOptions {
            binary_name: "crun".into(),
            root: "/run/r".into(),
            systemd_cgroup: true,
            no_pivot_root: true,
            no_new_keyring: true,
            shim_cgroup: "/shims".into(),
            io_uid: 1000,
            io_gid: 1001,
            criu_image_path: "/img".into(),
            criu_work_path: "/work".into(),
            ..Default::default()
        };
        // criu_path as containerd 1.6 encodes it (field 8), unknown to the 0.12 protos.
        o.special_fields
            .mut_unknown_fields()
            .add_length_delimited(RUNC_CRIU_PATH_FIELD, b"/opt/criu".to_vec());
        let got = from_any(&MessageField::some(pack_any(&o).expect("pack"))).expect("runc");
        assert_eq!(
            got,
            RuntimeOptions {
                binary_name: "crun".into(),
                root: "/run/r".into(),
                systemd_cgroup: true,
                criu_path: "/opt/criu".into(),
                no_pivot_root: true,
                no_new_keyring: true,
                shim_cgroup: "/shims".into(),
                io_uid: 1000,
                io_gid: 1001,
                criu_image_path: "/img".into(),
                criu_work_path: "/work".into(),
            }
        );
        // With the long type URL too.
        let mut any = pack_any(&o).expect("pack");
        any.type_url = format!("type.googleapis.com/{}", any.type_url);
        assert_eq!(from_any(&MessageField::some(any)).expect("long url"), got);
    }

    #[test]
    fn toml_wrapper_reads_every_key() {
        let body = r#"
BinaryName = "crun"
Root = "/run/r"
SystemdCgroup = true
CriuPath = "/opt/criu"
NoPivotRoot = true
NoNewKeyring = true
ShimCgroup = "/shims"
IoUid = 1000
IoGid = 1001
CriuImagePath = "/img"
CriuWorkPath = "/work"
SomethingElse = { nested = [1, 2] }
"#;
        assert_eq!(
            from_any(&wrapper_any(body)).expect("toml"),
            RuntimeOptions {
                binary_name: "crun".into(),
                root: "/run/r".into(),
                systemd_cgroup: true,
                criu_path: "/opt/criu".into(),
                no_pivot_root: true,
                no_new_keyring: true,
                shim_cgroup: "/shims".into(),
                io_uid: 1000,
                io_gid: 1001,
                criu_image_path: "/img".into(),
                criu_work_path: "/work".into(),
            }
        );
    }

    #[test]
    fn the_readme_snippet_as_containerd_sends_it() {
        // containerd 1.7/2.x re-encode the options table; this is what they produce.
        let got = from_any(&wrapper_any("BinaryName = \"runc\"\n")).expect("snippet");
        assert_eq!(got.binary_name, "runc");
        assert_eq!(got.root, "");
    }

    #[test]
    fn config_path_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tether.toml");
        std::fs::write(
            &path,
            "BinaryName = \"/usr/local/bin/myrunc\"\nNoPivotRoot = true\n",
        )
        .expect("write");
        let w = Wrapper {
            config_path: path.display().to_string(),
            config_body: b"BinaryName = \"ignored\"".to_vec(),
            ..Default::default()
        };
        let got = from_any(&MessageField::some(w.to_any().expect("encode"))).expect("path");
        assert_eq!(got.binary_name, "/usr/local/bin/myrunc");
        assert!(got.no_pivot_root);

        let missing = dir.path().join("missing.toml").display().to_string();
        let w = Wrapper {
            config_path: missing.clone(),
            ..Default::default()
        };
        let m = invalid(from_any(&MessageField::some(w.to_any().expect("encode"))));
        assert!(m.contains(&missing), "{m}");
    }

    #[test]
    fn a_config_path_that_is_not_a_regular_file_is_refused_at_once() {
        use crate::files::test_support::*;
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo_path = fifo(dir.path(), "tether.toml");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 2 << 20]).expect("write");
        // The FIFO first: before this was refused it blocked (and /dev/zero never ends).
        for path in [fifo_path.clone(), big, "/dev/zero".into()] {
            let w = Wrapper {
                config_path: path.display().to_string(),
                ..Default::default()
            };
            let any = MessageField::some(w.to_any().expect("encode"));
            let got = must_not_block(move || from_any(&any), open_peer(&fifo_path, true));
            let m = invalid(got);
            assert!(m.contains(&path.display().to_string()), "{m}");
        }
    }

    #[test]
    fn garbage_bytes_are_refused() {
        for url in [type_url::<RuncOptions>(), WRAPPER_URL] {
            let any = Any {
                type_url: url.into(),
                value: vec![0xff; 16],
                ..Default::default()
            };
            let m = invalid(from_any(&MessageField::some(any)));
            assert!(m.contains("malformed runtime options"), "{m}");
            assert!(m.contains(url), "{m}");
        }
        let m = invalid(from_any(&MessageField::some(Any {
            type_url: "example.Other".into(),
            value: vec![1, 2, 3],
            ..Default::default()
        })));
        assert!(m.contains("example.Other"), "{m}");
    }

    #[test]
    fn bad_toml_is_refused() {
        let m = invalid(from_any(&wrapper_any("BinaryName = \"runc")));
        assert!(m.contains("not valid TOML"), "{m}");
        let w = Wrapper {
            config_body: vec![0xff, 0xfe],
            ..Default::default()
        };
        let m = invalid(from_any(&MessageField::some(w.to_any().expect("encode"))));
        assert!(m.contains("UTF-8"), "{m}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (body, key) in [
            ("BinaryName = 1", "BinaryName"),
            ("Root = true", "Root"),
            ("SystemdCgroup = \"true\"", "SystemdCgroup"),
            ("NoPivotRoot = 1", "NoPivotRoot"),
            ("IoUid = \"1000\"", "IoUid"),
            ("IoGid = -1", "IoGid"),
            ("IoUid = 4294967296", "IoUid"),
            ("CriuPath = [\"/a\"]", "CriuPath"),
        ] {
            let m = invalid(from_any(&wrapper_any(body)));
            assert!(m.contains(key), "{body}: {m}");
        }
    }
}
