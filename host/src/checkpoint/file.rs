//! The embedded checkpoint store: one JSON file in the state directory,
//! replaced atomically (write a temporary file, fsync it, rename it over the
//! old one, fsync the directory), so a crash leaves the old or the new file,
//! never a torn one. An exclusive lock on `LOCK` keeps two processes from
//! sharing a state directory.

use super::{Position, Stored};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Error, ErrorKind, Write};
use std::path::{Path, PathBuf};

const FILE: &str = "checkpoints.json";

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    checkpoints: Vec<Entry>,
    /// When each pipeline first started on a source with `latest` (absent
    /// in files written before this was stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    starts: Vec<StartEntry>,
}

#[derive(Serialize, Deserialize)]
struct StartEntry {
    pipeline: String,
    stream: String,
    since_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    pipeline: String,
    stream: String,
    shard: String,
    #[serde(flatten)]
    position: Position,
}

pub struct FileStore {
    dir: PathBuf,
    _lock: Option<File>,
}

impl FileStore {
    /// Opens (creating) the state directory and locks it for this process.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| context(e, dir, "cannot create the state directory"))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| context(e, &lock_path, "cannot open"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::WouldBlock,
                    format!(
                        "{}: another distributary process holds this state directory",
                        dir.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(context(e, &lock_path, "cannot lock"));
            }
        }
        Ok(FileStore {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// Opens the state directory for reading only, without the lock (for `status`).
    pub fn open_read_only(dir: &Path) -> Self {
        FileStore {
            dir: dir.to_path_buf(),
            _lock: None,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    pub fn load(&self) -> std::io::Result<Stored> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Stored::default()),
            Err(e) => return Err(context(e, &path, "cannot read")),
        };
        let doc: Document = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidData,
                format!("{}: not a checkpoint file: {e}", path.display()),
            )
        })?;
        if doc.version != 1 {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("{}: unknown version {}", path.display(), doc.version),
            ));
        }
        Ok(Stored {
            positions: doc
                .checkpoints
                .into_iter()
                .map(|e| ((e.pipeline, e.stream, e.shard), e.position))
                .collect(),
            starts: doc
                .starts
                .into_iter()
                .map(|e| ((e.pipeline, e.stream), e.since_ms))
                .collect(),
        })
    }

    pub fn save(&self, stored: &Stored) -> std::io::Result<()> {
        let doc = Document {
            version: 1,
            starts: stored
                .starts
                .iter()
                .map(|((pipeline, stream), since_ms)| StartEntry {
                    pipeline: pipeline.clone(),
                    stream: stream.clone(),
                    since_ms: *since_ms,
                })
                .collect(),
            checkpoints: stored
                .positions
                .iter()
                .map(|((pipeline, stream, shard), position)| Entry {
                    pipeline: pipeline.clone(),
                    stream: stream.clone(),
                    shard: shard.clone(),
                    position: position.clone(),
                })
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&doc).map_err(Error::other)?;
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut file = File::create(&tmp).map_err(|e| context(e, &tmp, "cannot create"))?;
        file.write_all(&text)
            .map_err(|e| context(e, &tmp, "cannot write"))?;
        file.sync_all()
            .map_err(|e| context(e, &tmp, "cannot fsync"))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|e| context(e, &path, "cannot replace"))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| context(e, &self.dir, "cannot fsync"))?;
        Ok(())
    }
}

fn context(e: Error, path: &Path, what: &str) -> Error {
    Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert!(store.load().unwrap().positions.is_empty());
        let mut stored = Stored::default();
        let table = &mut stored.positions;
        table.insert(
            ("p".into(), "s".into(), "shardId-0".into()),
            Position {
                sequence: Some("42".into()),
                sub_sequence: Some(3),
                finished: false,
                latest_since_ms: None,
            },
        );
        table.insert(
            ("p".into(), "s".into(), "shardId-1".into()),
            Position {
                sequence: None,
                sub_sequence: None,
                finished: true,
                latest_since_ms: None,
            },
        );
        stored
            .starts
            .insert(("p".into(), "s".into()), 1_700_000_000_000);
        store.save(&stored).unwrap();
        assert_eq!(store.load().unwrap(), stored);
        assert!(
            FileStore::open(dir.path()).is_err(),
            "a second process must not share the directory"
        );
        drop(store);
        assert!(FileStore::open(dir.path()).is_ok());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        let err = FileStore::open(dir.path()).unwrap().load().unwrap_err();
        assert!(err.to_string().contains(FILE), "{err}");
    }
}
