//! For root unit tests: a namespace of their own with `lo` up, deleted on drop (also
//! when the test panics).

pub struct ThrowawayNetns(pub String);

impl ThrowawayNetns {
    /// `None` when not root (the test then skips).
    pub fn new(tag: &str) -> Option<ThrowawayNetns> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skip: not root");
            return None;
        }
        let name = format!("flut{}-{tag}", std::process::id());
        if super::exists(&name) {
            let _ = super::delete(&name);
        }
        super::create(&name).expect("create test netns");
        let ns = ThrowawayNetns(name);
        super::output_in(&ns.0, &["ip", "link", "set", "lo", "up"], None).expect("lo up");
        Some(ns)
    }
}

impl Drop for ThrowawayNetns {
    fn drop(&mut self) {
        let _ = super::delete(&self.0);
    }
}
