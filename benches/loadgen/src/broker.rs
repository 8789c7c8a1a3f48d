//! The broker under test: started by us (`--broker-cmd`), or already running (`--broker-pid`).
//! Reads its CPU time and peak RSS from /proc.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Broker {
    pid: u32,
    child: Option<Child>,
    log: Option<(PathBuf, bool)>,
    /// Spawn until the first successful TCP connect to the broker port, in ms.
    pub startup_ms: Option<f64>,
}

impl Broker {
    /// Runs `sh -c "exec CMD"` (so the shell is replaced by the broker and the pid is the
    /// broker's), with stdout and stderr to `log` (default: a temp file, removed at a clean
    /// stop), and waits until 127.0.0.1:`port` accepts a connection.
    pub fn spawn(cmd: &str, port: u16, log: Option<PathBuf>, timeout: Duration) -> Result<Broker> {
        let (log_path, remove_log) = match log {
            Some(p) => (p, false),
            None => (
                std::env::temp_dir().join(format!("ottla-load-broker-{}.log", std::process::id())),
                true,
            ),
        };
        let out = File::create(&log_path)
            .with_context(|| format!("creating broker log {}", log_path.display()))?;
        let err = out.try_clone()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            bail!("port {port} already accepts connections: is another broker running there?");
        }
        let t0 = Instant::now();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("spawning the broker command")?;
        let mut broker = Broker {
            pid: child.id(),
            child: Some(child),
            log: Some((log_path, remove_log)),
            startup_ms: None,
        };
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                broker.startup_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
                return Ok(broker);
            }
            if let Some(status) = broker.child.as_mut().unwrap().try_wait()? {
                broker.child = None;
                bail!(
                    "the broker exited ({status}) before accepting connections on port {port}{}",
                    broker.log_hint()
                );
            }
            if t0.elapsed() > timeout {
                bail!(
                    "the broker did not accept connections on port {port} within {:?}{}",
                    timeout,
                    broker.log_hint()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Measures an already running broker; it is left running at the end.
    pub fn attach(pid: u32) -> Result<Broker> {
        let b = Broker {
            pid,
            child: None,
            log: None,
            startup_ms: None,
        };
        b.cpu_seconds()
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        Ok(b)
    }

    pub fn log_hint(&self) -> String {
        match &self.log {
            Some((p, _)) => format!(" (broker log: {})", p.display()),
            None => String::new(),
        }
    }

    /// utime + stime of the broker process, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // The command name (field 2) is in parentheses and may hold spaces: split after it.
        let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); utime and stime are fields 14 and 15.
        let utime: u64 = fields.get(11).context("no utime")?.parse()?;
        let stime: u64 = fields.get(12).context("no stime")?.parse()?;
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if tck <= 0 {
            bail!("sysconf(_SC_CLK_TCK) failed");
        }
        Ok((utime + stime) as f64 / tck as f64)
    }

    /// VmHWM (peak resident set size) of the broker, in MiB.
    pub fn peak_rss_mb(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("VmHWM:") {
                let kb: u64 = v.trim().trim_end_matches("kB").trim().parse()?;
                return Ok(kb as f64 / 1024.0);
            }
        }
        bail!("no VmHWM in /proc/{}/status", self.pid)
    }

    /// SIGTERM, then waits (up to 30 s, then SIGKILL). Only for a broker we started.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let t0 = Instant::now();
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    eprintln!("broker did not exit 30 s after SIGTERM: killing it");
                    let _ = child.kill();
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some((path, true)) = &self.log {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            // An error path: keep the log for a look.
            if let Some((_, remove)) = self.log.as_mut() {
                *remove = false;
            }
            let hint = self.log_hint();
            let _ = self.stop();
            eprintln!("broker stopped{hint}");
        }
    }
}
