//! The on-disk staging area of uploaded batch files: `{data_dir}/batches/{batchId}/files/{filePath}`.
//!
//! An upload is written to a hidden temporary file and renamed into place when complete, so a file
//! is either absent or whole; a repeated upload to the same path replaces it (`ingest-api.md` §4.2).

use std::path::{Component, Path, PathBuf};

/// Why a client-supplied file path is refused.
#[derive(Debug, thiserror::Error)]
#[error("file path `{0}` is invalid: use relative segments without `..`")]
pub struct InvalidFilePath(pub String);

/// Locates batch files under the data directory.
#[derive(Debug, Clone)]
pub struct BatchFiles {
    root: PathBuf,
}

/// One uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// The path the client uploaded it under (may contain `/`).
    pub name: String,
    /// Its location on disk.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Prefix of in-progress uploads; such files are never listed as uploaded.
const TEMP_PREFIX: &str = ".upload-";

impl BatchFiles {
    /// Uses `{data_dir}/batches` as the staging root.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("batches"),
        }
    }

    /// Returns the final path of `file_path` in a batch, refusing absolute paths and `..`.
    pub fn final_path(&self, batch_id: &str, file_path: &str) -> Result<PathBuf, InvalidFilePath> {
        let relative = Path::new(file_path);
        let only_normal = relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
        let hidden = relative.components().any(|component| {
            component
                .as_os_str()
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        });
        if file_path.is_empty() || !only_normal || hidden {
            return Err(InvalidFilePath(file_path.to_owned()));
        }
        Ok(self.batch_dir(batch_id).join(relative))
    }

    /// Returns a unique temporary path next to `final_path`.
    pub fn temporary_path(final_path: &Path) -> PathBuf {
        let name = final_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        final_path.with_file_name(format!(
            "{TEMP_PREFIX}{}-{name}",
            uuid::Uuid::new_v4().simple()
        ))
    }

    fn batch_dir(&self, batch_id: &str) -> PathBuf {
        self.root.join(batch_id).join("files")
    }

    /// Lists the completely uploaded files of a batch, sorted by name.
    pub fn list(&self, batch_id: &str) -> std::io::Result<Vec<StagedFile>> {
        let base = self.batch_dir(batch_id);
        let mut files = Vec::new();
        let mut pending = vec![base.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                let file_type = entry.file_type()?;
                if file_type.is_dir() {
                    pending.push(path);
                } else if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let name = path
                        .strip_prefix(&base)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .replace('\\', "/");
                    files.push(StagedFile {
                        name,
                        size: entry.metadata()?.len(),
                        path,
                    });
                }
            }
        }
        files.sort_by(|left, right| left.name.cmp(&right.name));
        Ok(files)
    }

    /// Deletes a batch's staged files (after it is applied, failed or aborted).
    pub fn remove(&self, batch_id: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.root.join(batch_id)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escaping_the_batch_are_refused() {
        let files = BatchFiles::new(Path::new("/data"));
        for bad in ["", "../x", "/etc/passwd", "a/../../b", ".upload-x", "./a"] {
            assert!(files.final_path("b", bad).is_err(), "{bad}");
        }
        assert_eq!(
            files.final_path("b", "part=1/f.json").unwrap(),
            PathBuf::from("/data/batches/b/files/part=1/f.json")
        );
    }

    #[test]
    fn listing_skips_temporary_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let files = BatchFiles::new(dir.path());
        let done = files.final_path("b", "a/one.json").unwrap();
        std::fs::create_dir_all(done.parent().unwrap()).unwrap();
        std::fs::write(&done, b"{}").unwrap();
        std::fs::write(BatchFiles::temporary_path(&done), b"partial").unwrap();
        let listed = files.list("b").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "a/one.json");
        assert_eq!(listed[0].size, 2);
        files.remove("b").unwrap();
        assert!(files.list("b").unwrap().is_empty());
    }
}
