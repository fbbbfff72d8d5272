//! `distributary plugin new NAME --lang rust|python|js`: a plugin project
//! from the templates this binary carries (the repository's own
//! `examples/plugin-template`, `examples/python-plugin`, and
//! `examples/js-plugin` with `plugins/js/sdk.js`, embedded at build time), with sample records, a test, and the commands to build and
//! dry-run it. `plan` (pure) decides the files; `write` creates them.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The files of a new project (paths relative to its directory) and what to run next.
#[derive(Debug)]
pub struct Scaffold {
    pub files: Vec<(PathBuf, String)>,
    pub next: Vec<String>,
}

const RUST_LIB: &str = include_str!("../../examples/plugin-template/src/lib.rs");
const RECORDS: &str = include_str!("../../examples/plugin-template/records.jsonl");
const PYTHON_APP: &str = include_str!("../../examples/python-plugin/app.py");
const WIT: &str = include_str!("../../wit/plugin.wit");
const JS_PLUGIN: &str = include_str!("../../examples/js-plugin/route_by_field.js");
const JS_SDK: &str = include_str!("../../plugins/js/sdk.js");

/// The Rust template's `plugin_config` and outputs, for the dry run.
const RUST_CONFIG: &str = r#"{"keyword":"ERROR","matched":"alerts","others":"archive"}"#;
const RUST_OUTPUTS: &str = "alerts,archive";
/// The Python template routes by a JSON field, like route_by_field.
const PYTHON_CONFIG: &str = r#"{"field":"level","routes":{"ERROR":"alerts"},"default":"archive"}"#;
const PYTHON_RECORDS: &str = r#"{"data": {"level": "ERROR", "msg": "disk full"}, "partition_key": "host-1"}
{"data": {"level": "INFO", "msg": "all good"}, "partition_key": "host-2"}
{"data": "not JSON: goes to the default output", "partition_key": "host-3"}
"#;

/// A plugin name: a lowercase letter, then lowercase letters, digits, `-` or `_`.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        || name.len() > 64
    {
        return Err(format!(
            "plugin name {name:?}: use a lowercase letter, then lowercase letters, digits, '-' or '_' (at most 64)"
        ));
    }
    Ok(())
}

/// The project for plugin `name` in `lang`. `sdk`: where the Rust SDK crate
/// is (a path; default: the repository on GitHub).
pub fn plan(name: &str, lang: Lang, sdk: Option<&str>) -> Result<Scaffold, String> {
    check_name(name)?;
    let lib = name.replace('-', "_");
    Ok(match lang {
        Lang::Rust => {
            let sdk = match sdk {
                Some(path) => format!("{{ path = {path:?} }}"),
                None => "{ git = \"https://github.com/distributary/distributary\" }".into(),
            };
            let wasm = format!("target/wasm32-wasip2/release/{lib}.wasm");
            let cargo = format!(
                "# A distributary routing plugin (see docs/plugins.md in the distributary repository).\n\
                 [package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [lib]\nname = \"{lib}\"\n\
                 # cdylib: the WebAssembly component; rlib: lets `cargo test` run the logic natively.\n\
                 crate-type = [\"cdylib\", \"rlib\"]\n\n\
                 [dependencies]\ndistributary-plugin-sdk = {sdk}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
                 # Its own workspace, wherever it is created.\n[workspace]\n"
            );
            let source = RUST_LIB
                .replace("my-plugin", name)
                .replace("my_plugin", &lib)
                .replace("examples/plugin-template/records.jsonl", "records.jsonl");
            Scaffold {
                files: vec![
                    ("Cargo.toml".into(), cargo),
                    ("src/lib.rs".into(), source),
                    ("records.jsonl".into(), RECORDS.to_string()),
                ],
                next: vec![
                    format!("cd {name}"),
                    "rustup target add wasm32-wasip2".into(),
                    "cargo test                                     # the routing logic, natively"
                        .into(),
                    format!("cargo build --release --target wasm32-wasip2   # {wasm}"),
                    dry_run(&wasm, RUST_CONFIG, RUST_OUTPUTS),
                    "  (add --watch to run it again whenever the plugin or the records change)"
                        .into(),
                ],
            }
        }
        Lang::Python => component_project(
            name,
            &lib,
            "componentize-py (CPython inside, ~18 MB), in a private virtualenv",
            "if [ ! -x .venv/bin/componentize-py ]; then\n  python3 -m venv .venv\n  .venv/bin/pip install --quiet componentize-py==0.25.1\nfi\n\
             .venv/bin/componentize-py -d wit -w router componentize app -p . -o",
            vec![("app.py".into(), PYTHON_APP.to_string())],
        ),
        Lang::Js => component_project(
            name,
            &lib,
            "componentize-js (SpiderMonkey inside, ~12 MB), installed here by npm",
            "if [ ! -x node_modules/.bin/componentize-js ]; then\n  npm install --no-audit --no-fund @bytecodealliance/componentize-js@0.23.0\nfi\n\
             node_modules/.bin/componentize-js plugin.js --wit wit --world-name router \\\n  --disable stdio random clocks http fetch-event -o",
            vec![
                (
                    "plugin.js".into(),
                    JS_PLUGIN.replace("../../plugins/js/sdk.js", "./sdk.js"),
                ),
                ("sdk.js".into(), JS_SDK.to_string()),
            ],
        ),
    })
}

fn dry_run(wasm: &str, config: &str, outputs: &str) -> String {
    format!(
        "distributary route --plugin {wasm} --plugin-config '{config}' --outputs {outputs} --input records.jsonl"
    )
}

/// A project built by a componentizer (Python, JavaScript): its `sources`,
/// the contract, sample records, `build.sh` (`tool`: the commands that
/// build, ending where the output file name goes) and `test.sh` (the dry
/// run compared with `expected.jsonl`).
fn component_project(
    name: &str,
    lib: &str,
    with: &str,
    tool: &str,
    sources: Vec<(PathBuf, String)>,
) -> Scaffold {
    let wasm = format!("{lib}.wasm");
    let header = "#!/usr/bin/env bash\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n";
    let build = format!("{header}# Builds {wasm} with {with}.\n{tool} {wasm}\n");
    let test = format!(
        "{header}# The test: routes records.jsonl through the built plugin and compares with expected.jsonl.\n\
         {} > routed.jsonl\n\
         diff -u expected.jsonl routed.jsonl && echo \"ok: every record routed as expected\"\n",
        dry_run(&wasm, PYTHON_CONFIG, RUST_OUTPUTS)
    );
    let mut files = sources;
    files.extend([
        ("wit/plugin.wit".into(), WIT.to_string()),
        ("records.jsonl".into(), PYTHON_RECORDS.to_string()),
        ("build.sh".into(), build),
        ("test.sh".into(), test),
    ]);
    Scaffold {
        files,
        next: vec![
            format!("cd {name}"),
            format!("./build.sh                                     # {wasm}"),
            dry_run(&wasm, PYTHON_CONFIG, RUST_OUTPUTS),
            "  (add --watch to run it again whenever the plugin or the records change)".into(),
            "./test.sh    # once the output is what you want: save it as expected.jsonl first"
                .into(),
        ],
    }
}

/// Creates the project in `dir` (which must not exist yet).
pub fn write(dir: &Path, scaffold: &Scaffold) -> Result<(), String> {
    if dir.exists() {
        return Err(format!(
            "{}: already exists; not overwriting it",
            dir.display()
        ));
    }
    for (path, text) in &scaffold.files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("{}: cannot create: {e}", parent.display()))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: cannot make executable: {e}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("my-router").is_ok());
        for bad in ["", "Router", "1router", "my router", "../x"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_rust_project_is_named_after_the_plugin_and_points_at_its_sdk() {
        let s = plan("tenant-router", Lang::Rust, Some("/src/plugins/sdk")).unwrap();
        let file = |name: &str| {
            s.files
                .iter()
                .find(|(p, _)| p == Path::new(name))
                .map(|(_, t)| t.as_str())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert!(file("Cargo.toml").contains("name = \"tenant-router\""));
        assert!(file("Cargo.toml").contains("name = \"tenant_router\""));
        assert!(file("Cargo.toml").contains("path = \"/src/plugins/sdk\""));
        assert!(!file("src/lib.rs").contains("my_plugin"));
        assert!(
            file("src/lib.rs").contains("#[test]"),
            "the template's tests come along"
        );
        assert!(s.next.iter().any(|c| c.contains("tenant_router.wasm")));
    }

    #[test]
    fn the_js_project_imports_its_own_copy_of_the_sdk() {
        let s = plan("js-router", Lang::Js, None).unwrap();
        let plugin = &s
            .files
            .iter()
            .find(|(p, _)| p == Path::new("plugin.js"))
            .unwrap()
            .1;
        assert!(plugin.contains("from \"./sdk.js\""));
        assert!(s.files.iter().any(|(p, _)| p == Path::new("sdk.js")));
    }

    #[test]
    fn the_python_project_carries_the_contract_and_a_test() {
        let s = plan("py-router", Lang::Python, None).unwrap();
        let names: Vec<&Path> = s.files.iter().map(|(p, _)| p.as_path()).collect();
        for expected in [
            "app.py",
            "wit/plugin.wit",
            "records.jsonl",
            "build.sh",
            "test.sh",
        ] {
            assert!(
                names.contains(&Path::new(expected)),
                "{expected} missing: {names:?}"
            );
        }
    }
}
