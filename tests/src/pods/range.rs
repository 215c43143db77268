//! Which /24s of the pod range a cluster's nodes hand out. Several clusters may run on one
//! machine at once (the e2e binary's and the ones its tests start), and their pods' IPs all
//! become host routes: two pods with one IP would take each other's route. So each cluster
//! claims /24 blocks of its own, as shared `flock`s on one file per block that the cluster's
//! harness and its pod runner hold for as long as they live — the kernel lets go of them when
//! they exit, however they exit, so a cluster killed with `kill -9` claims nothing.
//!
//! Claiming happens under one machine-wide lock: within it, a block is free exactly when an
//! exclusive lock on its file can be taken, which no holder's shared lock allows.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{HarnessError, POD_BLOCKS, Result, pod_block_cidr};

/// Where the lock files are.
const DIR: &str = "/run/sluice-pods/blocks";

/// The blocks a cluster holds, by index (see [`pod_block_cidr`]); let go of when dropped.
#[derive(Debug)]
pub struct PodBlocks {
    indices: Vec<usize>,
    _locks: Vec<File>,
}

impl PodBlocks {
    /// Claims `count` free blocks.
    pub fn claim(count: usize) -> Result<Self> {
        Self::claim_in(Path::new(DIR), count)
    }

    fn claim_in(dir: &Path, count: usize) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(HarnessError::io(format!("creating {}", dir.display())))?;
        let mutex = open(&dir.join("claiming.lock"))?;
        mutex
            .lock()
            .map_err(HarnessError::io("waiting to claim pod blocks"))?;
        let mut indices = Vec::with_capacity(count);
        let mut locks = Vec::with_capacity(count);
        for index in 0..POD_BLOCKS {
            if indices.len() == count {
                break;
            }
            let file = open(&block_file(dir, index))?;
            // Free: nobody holds it. Then held shared, so that the runner can hold it too.
            if file.try_lock().is_ok() {
                file.unlock()
                    .map_err(HarnessError::io("unlocking a pod block"))?;
                file.lock_shared()
                    .map_err(HarnessError::io("holding a pod block"))?;
                indices.push(index);
                locks.push(file);
            }
        }
        drop(mutex);
        if indices.len() < count {
            return Err(HarnessError::Invalid {
                what: format!("{count} blocks of pod addresses"),
                detail: format!(
                    "only {} of the {POD_BLOCKS} are free (other clusters hold the rest)",
                    indices.len()
                ),
            });
        }
        Ok(Self {
            indices,
            _locks: locks,
        })
    }

    /// Holds blocks another process claimed (the pod runner, for its cluster's harness): shared,
    /// so both hold them, and they stay claimed while either lives.
    pub fn hold(indices: &[usize]) -> Result<Self> {
        Self::hold_in(Path::new(DIR), indices)
    }

    fn hold_in(dir: &Path, indices: &[usize]) -> Result<Self> {
        let mut locks = Vec::with_capacity(indices.len());
        for &index in indices {
            let file = open(&block_file(dir, index))?;
            file.lock_shared()
                .map_err(HarnessError::io("holding a pod block"))?;
            locks.push(file);
        }
        Ok(Self {
            indices: indices.to_vec(),
            _locks: locks,
        })
    }

    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The `node`th node's podCIDR.
    pub fn node_cidr(&self, node: usize) -> Option<String> {
        self.indices.get(node).and_then(|&i| pod_block_cidr(i))
    }

    /// The indices as the runner's `--pod-blocks` takes them.
    pub fn to_arg(&self) -> String {
        let parts: Vec<String> = self.indices.iter().map(usize::to_string).collect();
        parts.join(",")
    }
}

/// `--pod-blocks 3,4`: block indices.
pub fn parse_arg(text: &str) -> std::result::Result<Vec<usize>, String> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let index: usize = part.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
            if index < POD_BLOCKS {
                Ok(index)
            } else {
                Err(format!("{index} is beyond the {POD_BLOCKS} blocks"))
            }
        })
        .collect()
}

fn block_file(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{index}.lock"))
}

fn open(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(HarnessError::io(format!("opening {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_clusters_never_claim_the_same_block_and_a_block_is_free_once_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = PodBlocks::claim_in(dir.path(), 2).unwrap();
        assert_eq!(first.indices(), [0, 1]);
        assert_eq!(first.node_cidr(1).as_deref(), Some("198.18.1.0/24"));
        assert_eq!(first.node_cidr(2), None);
        // The runner holds them too: still claimed after the harness lets go.
        let runner = PodBlocks::hold_in(dir.path(), &parse_arg(&first.to_arg()).unwrap()).unwrap();
        let second = PodBlocks::claim_in(dir.path(), 1).unwrap();
        assert_eq!(second.indices(), [2]);
        drop(first);
        let third = PodBlocks::claim_in(dir.path(), 1).unwrap();
        assert_eq!(third.indices(), [3]);
        drop(runner);
        let fourth = PodBlocks::claim_in(dir.path(), 2).unwrap();
        assert_eq!(fourth.indices(), [0, 1]);
    }

    #[test]
    fn more_blocks_than_there_are_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PodBlocks::claim_in(dir.path(), POD_BLOCKS + 1).is_err());
    }

    #[test]
    fn the_runners_argument_is_block_indices_in_range() {
        assert_eq!(parse_arg("3,4"), Ok(vec![3, 4]));
        assert_eq!(parse_arg(""), Ok(vec![]));
        assert!(parse_arg("3,x").is_err());
        assert!(parse_arg(&POD_BLOCKS.to_string()).is_err());
    }
}
