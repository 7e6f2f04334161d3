//! Crash recovery: a slot starting up removes what an earlier run of the *same* slot left behind.
//!
//! Only the domain named exactly `pyti-<slave>-<slot>` and the files listed in [`SlotPaths`] are
//! touched; other domains (other slots, other slaves, the user's own guests) never are.

use crate::overlay::remove_if_present;
use crate::slot_domain::SlotDomain;
use crate::slot_paths::SlotPaths;
use crate::VmError;
use virt::connect::Connect;

/// What recovery found and removed, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// A domain of this slot's name was running and was destroyed.
    pub destroyed_domain: bool,
    /// A definition of this slot's name (with its snapshot metadata) was removed.
    pub undefined_domain: bool,
    /// Leftover files removed from the slot directory.
    pub removed_files: Vec<String>,
}

/// Destroys and undefines the domain called exactly `name` and deletes the slot's own files.
pub fn clean_leftovers(
    connect: &Connect,
    name: &str,
    paths: &SlotPaths,
) -> Result<Recovered, VmError> {
    let mut recovered = Recovered::default();
    if let Some(old) = SlotDomain::lookup(connect, name)? {
        if old.is_running()? {
            old.destroy()?;
            recovered.destroyed_domain = true;
        }
        // A transient domain vanishes when destroyed; a persistent one needs undefining.
        if SlotDomain::lookup(connect, name)?.is_some() {
            old.undefine()?;
            recovered.undefined_domain = true;
        }
    }
    for file in paths.files() {
        if file.exists() || file.symlink_metadata().is_ok() {
            remove_if_present(file)?;
            recovered.removed_files.push(file.display().to_string());
        }
    }
    if recovered != Recovered::default() {
        tracing::info!(
            domain = name,
            ?recovered,
            "cleaned up after an earlier run of this slot"
        );
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot_domain::tests::test_spec;
    use crate::warm_snapshot;

    #[test]
    fn recovery_cleans_its_own_domain_and_files_and_nothing_else() {
        let connect = Connect::open(Some("test:///default")).unwrap();
        let state = tempfile::tempdir().unwrap();
        let own = "pyti-vmtest-rec-1";
        // Neighbours whose names share a prefix or differ by one character.
        let others = [
            "pyti-vmtest-rec-10",
            "pyti-vmtest-rec-2",
            "pyti-vmtest-re-1",
            "xpyti-vmtest-rec-1",
        ];
        for name in others {
            let d = SlotDomain::define(&connect, &test_spec(name)).unwrap();
            d.start_paused().unwrap();
        }
        let leftover = SlotDomain::define(&connect, &test_spec(own)).unwrap();
        leftover.start_paused().unwrap();
        leftover.resume().unwrap();
        warm_snapshot::take(&leftover).unwrap();

        let paths = SlotPaths::new(state.path(), own);
        std::fs::create_dir_all(&paths.dir).unwrap();
        std::fs::write(&paths.warm_overlay, b"old overlay").unwrap();
        std::fs::write(&paths.console_log, b"old console").unwrap();
        let foreign = paths.dir.join("not-ours.txt");
        std::fs::write(&foreign, b"keep me").unwrap();
        let neighbour = SlotPaths::new(state.path(), "pyti-vmtest-rec-10");
        std::fs::create_dir_all(&neighbour.dir).unwrap();
        std::fs::write(&neighbour.warm_overlay, b"neighbour's").unwrap();

        let recovered = clean_leftovers(&connect, own, &paths).unwrap();
        assert!(recovered.destroyed_domain && recovered.undefined_domain);
        assert_eq!(recovered.removed_files.len(), 2);
        assert!(SlotDomain::lookup(&connect, own).unwrap().is_none());
        assert!(!paths.warm_overlay.exists() && !paths.console_log.exists());
        assert!(
            foreign.exists(),
            "files the slot did not create are left alone"
        );
        assert!(
            neighbour.warm_overlay.exists(),
            "other slots' files are left alone"
        );
        for name in others {
            let d = SlotDomain::lookup(&connect, name)
                .unwrap()
                .expect("neighbour still defined");
            assert!(d.is_running().unwrap(), "{name} must still be running");
        }

        // Nothing left: a second recovery finds nothing to do.
        assert_eq!(
            clean_leftovers(&connect, own, &paths).unwrap(),
            Recovered::default()
        );
    }
}
