//! The command line containerd gives a shim (Go `flag` syntax: `-name value` or `-name=value`).

use crate::error::{Result, ShimError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    /// containerd's GRPC address (part of the socket name).
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    /// `-info`: print the `RuntimeInfo` containerd 2.2+ asks for, and exit.
    pub info: bool,
    /// `start`, `delete`, or empty for the long-lived shim.
    pub action: String,
    /// A live upgrade: the fd of the handover record (docs/upgrade.md).
    pub resume_from: Option<i32>,
    /// Why the new image gave up and re-executed this (old) one with the record.
    pub fallback_reason: Option<String>,
    /// `--handover-check VERSION`: say whether this binary can take a record of VERSION.
    pub handover_check: Option<String>,
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags> {
    let mut f = Flags::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(name) = arg.strip_prefix('-') else {
            f.action = arg;
            // Like Go's flag package: parsing stops at the first non-flag.
            break;
        };
        let name = name.strip_prefix('-').unwrap_or(name);
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        match name {
            "debug" => f.debug = inline.as_deref() != Some("false"),
            "v" | "version" => f.version = true,
            "info" => f.info = inline.as_deref() != Some("false"),
            "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket"
            | "resume-from" | "fallback-reason" | "handover-check" => {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().ok_or_else(|| {
                        ShimError::InvalidArgument(format!("flag -{name} needs a value"))
                    })?,
                };
                match name {
                    "namespace" => f.namespace = value,
                    "id" => f.id = value,
                    "address" => f.address = value,
                    "publish-binary" => f.publish_binary = value,
                    "bundle" => f.bundle = value,
                    "resume-from" => {
                        f.resume_from = Some(value.parse().map_err(|e| {
                            ShimError::InvalidArgument(format!("-resume-from {value:?}: {e}"))
                        })?)
                    }
                    "fallback-reason" => f.fallback_reason = Some(value),
                    "handover-check" => f.handover_check = Some(value),
                    _ => f.socket = value,
                }
            }
            other => {
                return Err(ShimError::InvalidArgument(format!(
                    "flag provided but not defined: -{other}"
                )))
            }
        }
    }
    Ok(f)
}

impl Flags {
    /// The flags the long-lived shim is started with.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut v = vec![
            "-namespace".into(),
            self.namespace.clone(),
            "-id".into(),
            self.id.clone(),
            "-address".into(),
            self.address.clone(),
        ];
        if !self.publish_binary.is_empty() {
            v.extend(["-publish-binary".into(), self.publish_binary.clone()]);
        }
        if self.debug {
            v.push("-debug".into());
        }
        v
    }

    /// The long-lived shim's own flags, as it was started (what a new image is given again).
    pub fn serve_args(&self) -> Vec<String> {
        let mut v = self.daemon_args();
        if !self.socket.is_empty() {
            v.extend(["-socket".into(), self.socket.clone()]);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_containerds_command_lines() {
        let f = parse(args(
            "-namespace default -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id c1 -debug start",
        ))
        .unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.id, "c1");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert!(f.debug);
        assert_eq!(f.action, "start");
        let f = parse(args("-namespace=ns -id=x -bundle /b delete")).unwrap();
        assert_eq!(
            (f.namespace.as_str(), f.bundle.as_str(), f.action.as_str()),
            ("ns", "/b", "delete")
        );
        assert!(parse(args("-id")).is_err());
        let f = parse(args("-id x -socket /s -resume-from 7")).unwrap();
        assert_eq!(f.resume_from, Some(7));
        assert_eq!(f.serve_args()[f.serve_args().len() - 1], "/s");
        assert!(parse(args("-resume-from seven")).is_err());
        assert!(parse(args("-bogus 1")).is_err());
        assert!(parse(args("-info")).unwrap().info);
    }
}
