//! How the appliance's QEMU is accelerated: KVM where it works, TCG (software emulation) otherwise.

use std::env;
use std::fs::OpenOptions;

/// Environment variable libguestfs itself reads for backend settings (`force_tcg`, `force_kvm`).
pub const BACKEND_SETTINGS_ENV: &str = "LIBGUESTFS_BACKEND_SETTINGS";

/// Accelerator choice for the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accelerator {
    /// Follow `LIBGUESTFS_BACKEND_SETTINGS` when it names `force_tcg` or `force_kvm`; otherwise
    /// try KVM when `/dev/kvm` opens read-write and fall back to TCG if that launch fails (hosts
    /// where `/dev/kvm` exists but cannot run guests, e.g. nested: QEMU aborts at once).
    #[default]
    Auto,
    /// Software emulation: always works, ~3× slower appliance launch.
    Tcg,
    /// Hardware acceleration; launch fails if KVM does not work.
    Kvm,
}

impl Accelerator {
    /// Resolves [`Accelerator::Auto`] to a concrete choice (never returns `Auto`).
    pub fn resolve(self) -> Accelerator {
        match self {
            Accelerator::Auto => {
                let settings = env::var(BACKEND_SETTINGS_ENV).unwrap_or_default();
                Self::from_settings(&settings).unwrap_or_else(|| {
                    let kvm_usable = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/kvm")
                        .is_ok();
                    if kvm_usable {
                        Accelerator::Kvm
                    } else {
                        Accelerator::Tcg
                    }
                })
            }
            concrete => concrete,
        }
    }

    /// Reads a libguestfs backend-settings string (`a:b:c`); `None` when it does not decide.
    fn from_settings(settings: &str) -> Option<Accelerator> {
        let mut choice = None;
        for setting in settings.split(':') {
            match setting.trim() {
                "force_tcg" => choice = Some(Accelerator::Tcg),
                "force_kvm" => choice = Some(Accelerator::Kvm),
                _ => {}
            }
        }
        choice
    }

    /// The concrete choices to try, in order, until an appliance launches.
    pub fn candidates(self) -> Vec<Accelerator> {
        match self.resolve() {
            Accelerator::Kvm if self == Accelerator::Auto => {
                vec![Accelerator::Kvm, Accelerator::Tcg]
            }
            concrete => vec![concrete],
        }
    }

    /// The libguestfs backend setting that forces this accelerator.
    pub(crate) fn backend_setting(self) -> &'static str {
        match self.resolve() {
            Accelerator::Kvm => "force_kvm",
            _ => "force_tcg",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_string_decides_when_it_names_an_accelerator() {
        assert_eq!(
            Accelerator::from_settings("force_tcg"),
            Some(Accelerator::Tcg)
        );
        assert_eq!(
            Accelerator::from_settings("gdb:force_kvm"),
            Some(Accelerator::Kvm)
        );
        assert_eq!(Accelerator::from_settings(""), None);
        assert_eq!(Accelerator::from_settings("gdb"), None);
    }

    #[test]
    fn concrete_choices_resolve_to_themselves() {
        assert_eq!(Accelerator::Tcg.resolve(), Accelerator::Tcg);
        assert_eq!(Accelerator::Kvm.backend_setting(), "force_kvm");
        assert_eq!(Accelerator::Tcg.backend_setting(), "force_tcg");
        assert_eq!(Accelerator::Kvm.candidates(), [Accelerator::Kvm]);
        let auto = Accelerator::Auto.candidates();
        assert_eq!(
            auto.last(),
            Some(&Accelerator::Tcg),
            "auto always ends on TCG"
        );
    }
}
