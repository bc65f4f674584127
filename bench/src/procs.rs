//! Child processes measured from the outside: CPU time and peak RSS from `/proc` while they
//! run, and from `wait4` when they end; bytes on disk of a directory.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// How a measured child ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// Exit code, when it exited rather than died of a signal.
    pub code: Option<i32>,
    /// User + system CPU seconds over its whole life (from `wait4`).
    pub cpu_s: f64,
}

/// A child that is killed and reaped when dropped, so a failed run leaves nothing behind.
pub struct Proc {
    /// The child as spawned (its pipes may have been taken).
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
    reaped: bool,
}

impl Proc {
    /// Spawns `cmd`.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> io::Result<Self> {
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
        Ok(Self {
            child,
            name: name.to_owned(),
            reaped: false,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// User + system CPU seconds so far (`/proc/PID/stat`, clock-tick resolution).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }

    /// Peak resident set so far, KiB (`VmHWM` in `/proc/PID/status`).
    pub fn vm_hwm_kib(&self) -> Option<u64> {
        vm_hwm_kib(self.pid())
    }

    /// True while it has not exited.
    pub fn running(&mut self) -> bool {
        !self.reaped && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit and returns what `wait4` says about it.
    ///
    /// # Errors
    /// When it was already reaped or `wait4` fails.
    pub fn wait(&mut self) -> io::Result<Exit> {
        if self.reaped {
            return Err(io::Error::other(format!(
                "{} was already reaped",
                self.name
            )));
        }
        let exit = wait4(self.pid())?;
        self.reaped = true;
        Ok(exit)
    }

    /// Sends SIGTERM and waits for it to exit.
    ///
    /// # Errors
    /// As [`Proc::wait`].
    pub fn terminate(&mut self) -> io::Result<Exit> {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet, so not reused.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait4(pid: i32) -> io::Result<Exit> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Exit {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds of a live process.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// A `/proc/PID/status` field in kB.
fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set of a live process, KiB.
pub fn vm_hwm_kib(pid: i32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident set of a live process now, KiB.
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Bytes under `dir`: (apparent file sizes, allocated blocks).
pub fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total.0 += meta.len();
                total.1 += meta.blocks() * 512;
            }
        }
    }
    total
}

/// A loopback port free right now.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
