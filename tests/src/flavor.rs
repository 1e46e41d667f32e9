//! Which containerd the tests run against: the system's (Debian 12: 1.6) unless the environment
//! picks another, one `scripts/containerd-versions.sh` unpacked (trixie's 1.7, sid's 2.x).
//!
//! - `TETHER_CONTAINERD=/path/to/containerd`: that binary, with the `ctr` beside it;
//! - `TETHER_CONTAINERD_VERSION=1.7` (or `1.6`, `2`, `2.1`, ...): the first containerd whose
//!   version starts so, among the system's and those under `TETHER_CONTAINERD_CACHE`
//!   (default `/var/cache/tether/containerd`, one `<suite>/root/usr/bin/` each);
//! - neither: `containerd` and `ctr` from `PATH`.
//!
//! The choice is made once per test process and panics with how to fix it when the requested
//! containerd is not there. A containerd from the cache gets its own directory first on its
//! `PATH`, so `io.containerd.runc.v2` is the `containerd-shim-runc-v2` of the same package.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A containerd binary to run, overriding the version selection.
pub const CONTAINERD_ENV: &str = "TETHER_CONTAINERD";
/// The containerd version to run (`1.7`, `2`, ...).
pub const VERSION_ENV: &str = "TETHER_CONTAINERD_VERSION";
/// Where `scripts/containerd-versions.sh` unpacks containerds.
pub const CACHE_ENV: &str = "TETHER_CONTAINERD_CACHE";
pub const DEFAULT_CACHE: &str = "/var/cache/tether/containerd";

/// A containerd version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// From `containerd --version`: `containerd github.com/containerd/containerd 1.6.20~ds1 ...`
    /// or, for a build from a release tag, `... v2.3.4` (the first word that starts with a
    /// digit, or a `v` and a digit).
    pub fn parse(version_output: &str) -> Option<Version> {
        let word = version_output
            .split_whitespace()
            .map(|w| w.strip_prefix('v').unwrap_or(w))
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
        let mut nums = word
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().ok());
        Some(Version {
            major: nums.next()??,
            minor: nums.next()??,
            patch: nums.next().flatten().unwrap_or(0),
        })
    }

    /// Whether `want` (`1.7`, `2`, `2.1.9`) names this version.
    pub fn matches(&self, want: &str) -> bool {
        let parts = [self.major, self.minor, self.patch];
        let want: Vec<&str> = want.trim().trim_start_matches('v').split('.').collect();
        !want.is_empty()
            && want.len() <= 3
            && want
                .iter()
                .zip(parts)
                .all(|(w, p)| w.parse::<u32>().ok() == Some(p))
    }

    /// The config file version this containerd reads natively: 3 from 2.0 on (2.x migrates a
    /// version 2 file, with a warning), 2 before.
    pub fn config_version(&self) -> u32 {
        if self.major >= 2 {
            3
        } else {
            2
        }
    }
}

impl Version {
    /// The version of the main config file this containerd reads without migrating it: 4 from
    /// 2.3 on (the gRPC and ttrpc servers' settings moved into plugin tables), else
    /// [`Version::config_version`]. Plugin tables (CRI, drop-ins) are the same in 3 and 4.
    pub fn file_version(&self) -> u32 {
        if (self.major, self.minor) >= (2, 3) {
            4
        } else {
            self.config_version()
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The containerd under test and its client.
#[derive(Debug, Clone)]
pub struct Flavor {
    /// The daemon binary.
    pub containerd: PathBuf,
    /// The `ctr` of the same build.
    pub ctr: PathBuf,
    /// Put first on the daemon's `PATH` (the package's own shims), for a containerd not from
    /// the system.
    pub path_dir: Option<PathBuf>,
    pub version: Version,
}

/// The selected containerd (see the module docs); panics when the request cannot be met.
pub fn flavor() -> &'static Flavor {
    static FLAVOR: OnceLock<Flavor> = OnceLock::new();
    FLAVOR.get_or_init(|| select().unwrap_or_else(|e| panic!("{e}")))
}

fn select() -> Result<Flavor, String> {
    if let Some(bin) = env_nonempty(CONTAINERD_ENV) {
        return from_binary(Path::new(&bin), true);
    }
    let system = || {
        let containerd = which("containerd").ok_or(
            "containerd is not on PATH: install Debian's containerd (`make deps`)".to_string(),
        )?;
        from_binary(&containerd, false)
    };
    let Some(want) = env_nonempty(VERSION_ENV) else {
        return system();
    };
    let mut seen = Vec::new();
    if let Ok(f) = system() {
        if f.version.matches(&want) {
            return Ok(f);
        }
        seen.push(format!("{} ({})", f.containerd.display(), f.version));
    }
    let cache = PathBuf::from(env_nonempty(CACHE_ENV).unwrap_or_else(|| DEFAULT_CACHE.into()));
    let mut suites: Vec<PathBuf> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    suites.sort();
    for suite in suites {
        let bin = suite.join("root/usr/bin/containerd");
        if !bin.is_file() {
            continue;
        }
        match from_binary(&bin, true) {
            Ok(f) if f.version.matches(&want) => return Ok(f),
            Ok(f) => seen.push(format!("{} ({})", bin.display(), f.version)),
            Err(e) => seen.push(e),
        }
    }
    Err(format!(
        "{VERSION_ENV}={want}: no such containerd; found: [{}]. Unpack containerd 1.7 and 2.x with \
         `scripts/containerd-versions.sh` (into {}), or point {CONTAINERD_ENV} at a binary",
        seen.join(", "),
        cache.display()
    ))
}

fn from_binary(containerd: &Path, private: bool) -> Result<Flavor, String> {
    let out = Command::new(containerd)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", containerd.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = Version::parse(&text).ok_or_else(|| {
        format!(
            "{} --version: no version in {:?} {:?}",
            containerd.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let dir = containerd.parent().unwrap_or(Path::new("/"));
    let ctr = if private {
        dir.join("ctr")
    } else {
        which("ctr").unwrap_or_else(|| dir.join("ctr"))
    };
    if !ctr.is_file() {
        return Err(format!(
            "no ctr beside {} ({})",
            containerd.display(),
            ctr.display()
        ));
    }
    Ok(Flavor {
        containerd: containerd.to_path_buf(),
        ctr,
        path_dir: private.then(|| dir.to_path_buf()),
        version,
    })
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_containerd_versions() {
        let v = |s| Version::parse(s).expect("a version");
        assert_eq!(
            v("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"),
            Version {
                major: 1,
                minor: 6,
                patch: 20
            }
        );
        let sid = v("containerd github.com/containerd/containerd/v2 2.1.9+unknown \n");
        assert_eq!(sid.to_string(), "2.1.9");
        assert_eq!(sid.config_version(), 3);
        assert_eq!(
            v("ctr github.com/containerd/containerd 1.7.24~ds1").config_version(),
            2
        );
        assert_eq!(
            v("containerd github.com/containerd/containerd/v2 v2.3.4 \n").to_string(),
            "2.3.4"
        );
        assert_eq!(sid.file_version(), 3);
        assert_eq!(v("containerd x v2.3.4").file_version(), 4);
        assert_eq!(Version::parse("containerd"), None);
    }

    #[test]
    fn matches_version_prefixes() {
        let v = Version {
            major: 1,
            minor: 7,
            patch: 24,
        };
        assert!(v.matches("1.7"));
        assert!(v.matches("1"));
        assert!(v.matches("v1.7.24"));
        assert!(!v.matches("1.6"));
        assert!(!v.matches("1.72"));
        assert!(!v.matches("2"));
        assert!(!v.matches("1.7.24.1"));
    }
}
