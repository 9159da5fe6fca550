//! The running kernel, and which expectations apply to it.

use crate::model::CellPlan;

pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The trigger and expectations that apply on `release`: the first matching
/// `expect_by_kernel` entry, else the cell's own.
pub fn expectations_for(cell: &CellPlan, release: &str) -> (Option<String>, Vec<String>) {
    if let Ok(version) = crate::judge::KernelVersion::parse(release) {
        for k in &cell.by_kernel {
            let matches = crate::judge::KernelRange::parse(&k.kernel)
                .map(|r| r.contains(&version))
                .unwrap_or(false);
            if matches {
                let expect = if k.expect.is_empty() {
                    cell.expect.clone()
                } else {
                    k.expect.clone()
                };
                return (k.trigger.clone().or_else(|| cell.trigger.clone()), expect);
            }
        }
    }
    (cell.trigger.clone(), cell.expect.clone())
}
