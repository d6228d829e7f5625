//! The server under test: `--spawn` starts a local `shardcast serve` on a
//! free port (stopped with SIGTERM when the run ends, or killed and
//! started again on the same port by crash-restart); its CPU time and RSS
//! are read from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// A spawned server, stopped gracefully when dropped.
pub struct Spawned {
    child: Child,
    pub addr: SocketAddr,
    /// Its admin port, when given one (`--server-arg=--admin-listen=…`):
    /// the publish API lives there.
    pub admin: Option<SocketAddr>,
    /// Killed and reaped already: its pid may belong to another process now.
    dead: bool,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A drain: SIGTERM now, without waiting (see [`Spawned::wait_exit`]).
    pub fn terminate(&self) {
        // SAFETY: SIGTERM to our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits until the process exits, or `deadline`; its status, once
    /// reaped.
    pub fn wait_exit(&mut self, deadline: std::time::Instant) -> Option<std::process::ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.dead = true;
                    return Some(status);
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                _ => return None,
            }
        }
    }

    /// crash-restart: SIGKILL, as a crash or the OOM killer would, and
    /// reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dead = true;
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.dead {
            return;
        }
        // SAFETY: SIGTERM to our own child for a graceful stop.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// How to start the server.
#[derive(Clone, Copy)]
pub struct SpawnPlan<'a> {
    pub bin: Option<&'a str>,
    pub jwt_secret: &'a str,
    pub api_key: &'a str,
    pub dev_secret: bool,
    pub shards: Option<usize>,
    pub pin: bool,
    /// Extra `shardcast serve` arguments.
    pub extra: &'a [String],
    /// Listen here (a restart on the same port) instead of a free port.
    pub listen: Option<SocketAddr>,
}

/// Starts `shardcast serve` on 127.0.0.1:0 and waits for its address.
pub fn spawn(plan: &SpawnPlan) -> Result<Spawned, String> {
    let bin = plan.bin.map(str::to_string).unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_default();
        me.with_file_name("shardcast").to_string_lossy().into_owned()
    });
    let mut cmd = Command::new(&bin);
    let listen = plan.listen.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
    cmd.args(["serve", "--listen", &listen, "--log", "warn"]);
    if !plan.dev_secret {
        cmd.args(["--jwt-secret", plan.jwt_secret, "--api-key", plan.api_key]);
    }
    if !plan.pin {
        cmd.arg("--no-pin");
    }
    if let Some(shards) = plan.shards {
        cmd.args(["--shards", &shards.to_string()]);
    }
    cmd.args(plan.extra);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e} (build it: cargo build --release)"))?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut admin = None;
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                // "ADDR", or "ADDR (TLS: https, wss)".
                let first = |rest: &str| rest.split_whitespace().next().unwrap_or("").parse().ok();
                if let Some(rest) = line.strip_prefix("shardcast admin listening on ") {
                    admin = first(rest);
                }
                if let Some(addr) = line.strip_prefix("shardcast listening on ") {
                    match first(addr) {
                        Some(addr) => break addr,
                        None => {
                            let _ = child.kill();
                            return Err(format!("bad listening line from the server: {line}"));
                        }
                    }
                }
            }
            _ => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!("the spawned server exited before listening ({status})"));
            }
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Spawned {
        child,
        addr,
        admin,
        dead: false,
    })
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU ticks of every process in `pids` together (`None` if any is unreadable or none given).
pub fn cpu_ticks_of(pids: &[u32]) -> Option<u64> {
    (!pids.is_empty()).then(|| pids.iter().map(|&p| cpu_ticks(p)).sum::<Option<u64>>())?
}

/// RSS of every process in `pids` together.
pub fn rss_kib_of(pids: &[u32]) -> Option<u64> {
    (!pids.is_empty()).then(|| pids.iter().map(|&p| rss_kib(p)).sum::<Option<u64>>())?
}
