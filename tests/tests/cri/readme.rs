//! The README's CRI snippet and deploy files are the ones the tests run.

use super::*;

/// The README's CRI snippet for the containerd under test (its `options` table included),
/// copied into a containerd config, runs pods with the `tether` handler.
#[test]
fn readme_cri_snippet_runs_pods() {
    let version = flavor().version.config_version();
    let snippet = readme_toml_block(&format!("version = {version}\n"), "runtimes.tether.options");
    let cri = Cri::start_with(CriConfig::new(&tables_of(&snippet)));
    let pod = run_pod(&cri, TETHER_HANDLER, NamespaceMode::Container);
    let id = cri.run_container(&pod, "hello", &["echo", "hello"]);
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 0, "{st:?}");
    finish(cri, &[&pod]);
}

/// The README's Kubernetes section shows the deploy files as they are, so operators copy what
/// the tests run.
#[test]
fn readme_shows_the_deploy_files() {
    let readme = readme();
    for f in [
        "containerd/tether-v2.toml",
        "containerd/tether-v3.toml",
        "runtimeclass.yaml",
    ] {
        let path = tether_tests::cri::deploy_dir().join(f);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            code_blocks(&readme).iter().any(|b| b.trim() == body.trim()),
            "README.md does not show deploy/{f} as it is:\n{}",
            body.trim()
        );
    }
    assert!(
        readme.contains("## Kubernetes"),
        "README has a Kubernetes section"
    );
}

fn readme() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The fenced code blocks of a Markdown text, each without the fence's indentation.
fn code_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Vec<String>)> = None;
    for line in md.lines() {
        let indent = line.len() - line.trim_start().len();
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            None if fence => open = Some((indent, Vec::new())),
            None => {}
            Some((_, body)) if fence => blocks.push(body.join("\n")),
            Some((n, mut body)) => {
                body.push(line.get(n.min(indent)..).unwrap_or("").to_string());
                open = Some((n, body));
            }
        }
    }
    blocks
}

/// The first ```toml block of the README that starts with `head` and contains `needle`.
fn readme_toml_block(head: &str, needle: &str) -> String {
    let readme = readme();
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.starts_with(head) && b.contains(needle))
        .unwrap_or_else(|| panic!("no ```toml block starting {head:?} with {needle} in README.md"))
        .to_string()
}

/// containerd's CRI learns each handler's features from its shim's `-info` (2.2+ asks every
/// runtime that is not runc's) and reports them to kubelet: the `tether` handler must claim what
/// the `runc` handler claims for the same runc (recursive read-only mounts, user namespaces),
/// or kubelet refuses such pods on it.
#[test]
fn tether_handler_reports_the_features_of_runc_handler() {
    let cri = Cri::start();
    let st = cri.client().status().expect("Status");
    let features = |name: &str| {
        st.runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.features)
    };
    let (runc, tether) = (features(RUNC_HANDLER), features(TETHER_HANDLER));
    if (flavor().version.major, flavor().version.minor) >= (2, 2) {
        assert_eq!(
            tether,
            runc,
            "containerd {} reports the handlers: {:#?}",
            flavor().version,
            st.runtime_handlers
        );
        assert!(
            tether
                .flatten()
                .is_some_and(|f| f.recursive_read_only_mounts),
            "recursive read-only mounts, from runc's features: {:#?}",
            st.runtime_handlers
        );
    } else {
        // Before 2.2 containerd runs no `-info`: it learns only runc's handler's features (2.0,
        // 2.1) or none (1.x), whatever the shim could say.
        assert_eq!(
            tether.flatten(),
            None,
            "containerd {} reports the handlers: {:#?}",
            flavor().version,
            st.runtime_handlers
        );
    }
    finish(cri, &[]);
}
