//! Running nft commands (a ruleset text, `flush ruleset`) inside a namespace, in-process
//! through libnftables, the library `nft` itself is a thin shell around, where the
//! system has it (Debian's nftables package ships libnftables.so.1), else by spawning
//! `nft -f -`. Under QEMU/TCG a process spawn (fork of this process, exec, the dynamic
//! linking of nft and its shared libraries) costs far more than the load itself.
//!
//! The library is opened at run time (dlopen via libloading), not linked: faultlab then
//! needs neither libnftables-dev to build nor libnftables to start (iptables-only labs
//! run without it). The crates that bind it (libnftables-sys, libnftables1-sys) link at
//! build time and are unmaintained; the five functions used here are the library's
//! stable API (nftables/libnftables.h, unchanged since 0.9).

use anyhow::{anyhow, Context, Result};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// The library's file name (its soname).
const LIBRARY: &str = "libnftables.so.1";

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type BufferError = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetErrorBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// libnftables, opened once. Its calls are serialised by `lock`: nft_ctx_new sets
/// process-wide state (GMP's allocators, the parser's symbol tables).
struct Library {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_error: BufferError,
    get_error_buffer: GetErrorBuffer,
    run_cmd: RunCmd,
    lock: Mutex<()>,
    _lib: libloading::Library,
}

impl Library {
    fn open(name: &str) -> Result<Library> {
        // SAFETY: loading libnftables runs its ELF constructors, which only set up
        // static tables; the symbols are typed after nftables/libnftables.h.
        unsafe {
            let lib = libloading::Library::new(name).with_context(|| format!("opening {name}"))?;
            Ok(Library {
                ctx_new: *lib.get::<CtxNew>(b"nft_ctx_new\0")?,
                ctx_free: *lib.get::<CtxFree>(b"nft_ctx_free\0")?,
                buffer_error: *lib.get::<BufferError>(b"nft_ctx_buffer_error\0")?,
                get_error_buffer: *lib.get::<GetErrorBuffer>(b"nft_ctx_get_error_buffer\0")?,
                run_cmd: *lib.get::<RunCmd>(b"nft_run_cmd_from_buffer\0")?,
                lock: Mutex::new(()),
                _lib: lib,
            })
        }
    }

    /// Runs `text` in the calling thread's network namespace; Err carries nft's own
    /// error text (as `nft -f` prints it).
    fn run_here(&self, text: &CStr) -> std::result::Result<(), String> {
        let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: one context per call, created, used and freed on this thread while
        // holding the lock; the error buffer is copied out before the context is freed.
        unsafe {
            let ctx = (self.ctx_new)(0);
            if ctx.is_null() {
                return Err("nft_ctx_new failed".into());
            }
            (self.buffer_error)(ctx);
            let rc = (self.run_cmd)(ctx, text.as_ptr());
            let error = {
                let p = (self.get_error_buffer)(ctx);
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().trim().to_string()
                }
            };
            (self.ctx_free)(ctx);
            if rc == 0 {
                Ok(())
            } else if error.is_empty() {
                Err(format!("nft_run_cmd_from_buffer returned {rc}"))
            } else {
                Err(error)
            }
        }
    }
}

fn library() -> Option<&'static Library> {
    static LIB: OnceLock<Option<Library>> = OnceLock::new();
    LIB.get_or_init(|| Library::open(LIBRARY).ok()).as_ref()
}

/// How a command reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Library,
    Process,
}

/// Runs the nft command text `text` (a ruleset as `nft -f` reads it, or a command such
/// as `flush ruleset`) inside network namespace `netns`, as one transaction.
pub fn run(netns: &str, text: &str) -> Result<Via> {
    match library() {
        Some(lib) => run_with_library(lib, netns, text).map(|()| Via::Library),
        None => run_with_process(netns, text).map(|()| Via::Process),
    }
}

fn run_with_library(lib: &Library, netns: &str, text: &str) -> Result<()> {
    let c_text = CString::new(text).map_err(|_| anyhow!("an nft ruleset holds a NUL byte"))?;
    super::run_in(netns, || {
        lib.run_here(&c_text)
            .map_err(|e| anyhow!("nft (libnftables) in netns `{netns}` failed: {e}"))
    })
}

fn run_with_process(netns: &str, text: &str) -> Result<()> {
    super::output_in(netns, &["nft", "-f", "-"], Some(text))?;
    Ok(())
}

#[cfg(all(test, feature = "lab"))]
mod tests {
    use super::*;

    /// Needs root: both ways load the same ruleset into a scratch namespace, and a
    /// wrong ruleset fails with nft's own message and the namespace's name.
    #[test]
    fn library_and_process_load_alike_and_report_nft_errors() {
        let Some(tns) = super::super::throwaway::ThrowawayNetns::new("nft") else {
            return;
        };
        let ns = tns.0.as_str();
        let list = || {
            let out = super::super::output_in(ns, &["nft", "list", "ruleset"], None).unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let lib = library().expect("libnftables.so.1 (Debian: nftables) is installed");
        let rules = "table inet t {\n chain c {\n  type filter hook output priority 0;\n  udp dport 9 counter comment \"out\"\n }\n}\n";
        run_with_library(lib, ns, rules).unwrap();
        run_with_process(ns, "table ip p { chain d { counter comment \"x\"\n }\n}\n").unwrap();
        let listed = list();
        assert!(listed.contains("table inet t"), "{listed}");
        assert!(listed.contains("table ip p"), "{listed}");
        let e = run_with_library(lib, ns, "table inet t { chain c { bogus } }")
            .unwrap_err()
            .to_string();
        assert!(e.contains(ns) && e.contains("syntax error"), "{e}");
        assert_eq!(run(ns, "flush ruleset").unwrap(), Via::Library);
        assert_eq!(list().trim(), "");
    }
}
