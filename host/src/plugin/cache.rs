//! Compiling a plugin, with an on-disk cache of compiled artifacts.
//!
//! Compiling a component with Cranelift is the slow part of loading a plugin
//! (a Python component of ~18 MB takes ~10 s; loading its compiled artifact
//! ~0.1 s). The cache keeps each compiled artifact as
//! `<dir>/<sha256 of the component>-<engine key>.cwasm`, where the engine key
//! hashes wasmtime's precompile-compatibility settings (wasmtime version,
//! target, compiler flags): a different host build never reads an artifact it
//! cannot run. Files are written to a temporary name and renamed, so a reader
//! never sees a partial artifact; an artifact that fails to load is compiled
//! again and replaced.
//!
//! Trust: loading an artifact runs its native code without validation
//! (`Component::deserialize_file` is `unsafe` for that reason), so the cache
//! directory must be writable only by whoever may change the binary. It lives
//! in the state directory (`checkpoint.path`).

use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The SHA-256 of a plugin file, lower-case hex: its identity for reloads and the cache.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A directory of compiled artifacts.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ArtifactCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn artifact(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
    }

    fn load(&self, engine: &Engine, artifact: &Path) -> Option<Component> {
        if !artifact.is_file() {
            return None;
        }
        // SAFETY: artifacts in this directory were written by `store` below
        // from `Component::serialize` (see the trust note in the module doc);
        // wasmtime still checks the header against this engine's settings.
        match unsafe { Component::deserialize_file(engine, artifact) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(artifact = %artifact.display(), error = %format!("{e:#}"), "unusable compiled artifact; compiling again");
                None
            }
        }
    }

    fn store(&self, artifact: &Path, component: &Component) -> Result<(), String> {
        let bytes = component.serialize().map_err(|e| format!("{e:#}"))?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let temp = artifact.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&temp, &bytes)
            .and_then(|()| std::fs::rename(&temp, artifact))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                format!("cannot write {}: {e}", artifact.display())
            })
    }
}

/// Compiles `bytes` (whose SHA-256 is `digest`), through `cache` when there is one.
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    digest: &str,
    cache: Option<&ArtifactCache>,
) -> Result<Component, String> {
    let artifact = cache.map(|c| (c, c.artifact(engine, digest)));
    if let Some((cache, path)) = &artifact
        && let Some(component) = cache.load(engine, path)
    {
        tracing::debug!(artifact = %path.display(), "compiled plugin loaded from the cache");
        return Ok(component);
    }
    let started = Instant::now();
    let component = Component::new(engine, bytes)
        .map_err(|e| format!("not a valid WebAssembly component: {e:#}"))?;
    tracing::info!(
        digest = &digest[..12.min(digest.len())],
        compile_ms = started.elapsed().as_millis() as u64,
        "plugin compiled"
    );
    if let Some((cache, path)) = &artifact
        && let Err(e) = cache.store(path, &component)
    {
        tracing::warn!(error = %e, "cannot cache the compiled plugin; continuing without");
    }
    Ok(component)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(component)`, the smallest component, in the binary format (this
    /// wasmtime is built without the text format).
    const EMPTY_COMPONENT: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn a_second_compile_is_served_from_the_cache_and_a_broken_artifact_is_replaced() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(dir.path().join("cache"));
        let bytes = EMPTY_COMPONENT;
        let d = digest(&bytes);
        compile(&engine, &bytes, &d, Some(&cache)).unwrap();
        let artifact = cache.artifact(&engine, &d);
        assert!(artifact.is_file());
        assert!(cache.load(&engine, &artifact).is_some());
        std::fs::write(&artifact, b"not an artifact").unwrap();
        assert!(cache.load(&engine, &artifact).is_none());
        compile(&engine, &bytes, &d, Some(&cache)).unwrap();
        assert!(cache.load(&engine, &artifact).is_some());
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
