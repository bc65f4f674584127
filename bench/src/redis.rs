//! The peer (leg 6): the same counter updates into Redis, `HINCRBY` on a hash per (URL, hour)
//! with a field per column, pipelined 64 deep over one connection, spoken in RESP directly.
//! Redis runs with the AOF fsynced every second (it may lose the last second on a crash;
//! clicktally acknowledges only what is flushed).

use crate::procs::{free_port, tail, Proc};
use crate::workload::HOUR_MS;
use crate::Res;
use clicktally_proto::v1::EventBatch;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Commands per round trip.
pub const PIPELINE: usize = 64;

/// A Redis server for the benchmark, stopped when dropped.
pub struct Redis {
    proc: Proc,
    port: u16,
}

/// Why Redis was not measured, when it was not.
pub fn available() -> Result<(), String> {
    match Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => Err("skipped: redis-server not installed (apt-get install redis-server)".into()),
    }
}

impl Redis {
    /// Starts `redis-server` on a free loopback port with its files in `dir`.
    ///
    /// # Errors
    /// When it does not start or answer PING within 10 s.
    pub fn start(dir: &Path) -> Res<Self> {
        let port = free_port()?;
        let log = dir.join("redis.log");
        let proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--appendonly", "yes", "--appendfsync", "everysec"])
                .args(["--save", ""])
                .arg("--dir")
                .arg(dir)
                .stdout(std::fs::File::create(&log)?)
                .stderr(Stdio::null()),
        )?;
        let mut redis = Self { proc, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = redis.connect() {
                if c.command(&["PING"]).is_ok() {
                    return Ok(redis);
                }
            }
            if !redis.proc.running() || Instant::now() > deadline {
                return Err(format!("redis-server did not start:\n{}", tail(&log, 10)).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new connection.
    ///
    /// # Errors
    /// When it cannot connect.
    pub fn connect(&self) -> Res<Conn> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, s.try_clone()?),
            writer: s,
            out: Vec::with_capacity(64 * 1024),
        })
    }

    /// Peak RSS so far, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc.vm_hwm_kib().unwrap_or(0)
    }

    /// Stops it.
    pub fn stop(mut self) {
        let _ = self.proc.terminate();
    }
}

/// One RESP connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
}

impl Conn {
    fn push(&mut self, args: &[&[u8]]) {
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.out
                .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends what was pushed and reads `n` replies; errors on an error reply.
    fn flush(&mut self, n: usize) -> Res<()> {
        self.writer.write_all(&self.out)?;
        self.out.clear();
        let mut line = Vec::with_capacity(64);
        for _ in 0..n {
            line.clear();
            self.reader.read_until(b'\n', &mut line)?;
            match line.first() {
                Some(b':' | b'+') => {}
                Some(b'$') => {
                    // A bulk string (INFO): its length line, then the bytes and CRLF.
                    let len: i64 = std::str::from_utf8(&line[1..])?.trim().parse()?;
                    if len >= 0 {
                        let mut body = vec![0; len as usize + 2];
                        std::io::Read::read_exact(&mut self.reader, &mut body)?;
                    }
                }
                _ => return Err(format!("redis: {}", String::from_utf8_lossy(&line).trim()).into()),
            }
        }
        Ok(())
    }

    /// One command, one reply.
    ///
    /// # Errors
    /// When it fails.
    pub fn command(&mut self, args: &[&str]) -> Res<()> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.push(&args);
        self.flush(1)
    }
}

/// One run of the Redis leg.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisRun {
    /// Wall seconds.
    pub secs: f64,
    /// Events counted.
    pub events: u64,
    /// HINCRBY commands sent.
    pub commands: u64,
}

/// Counts every event of `batches` into Redis: `HINCRBY c:{tenant}:{source}:{hour}:{url}
/// {ActionType} 1`, plus `... ClickedThrough 1` when the user clicked through; 64 commands
/// per round trip.
///
/// # Errors
/// When Redis fails.
pub fn count(redis: &Redis, batches: &[EventBatch]) -> Res<RedisRun> {
    let mut c = redis.connect()?;
    c.command(&["FLUSHALL", "SYNC"])?;
    let mut run = RedisRun::default();
    let mut pending = 0;
    let mut key = Vec::with_capacity(256);
    let started = Instant::now();
    for ev in batches.iter().flat_map(|b| &b.events) {
        key.clear();
        key.extend_from_slice(b"c:");
        key.extend_from_slice(ev.tenant.as_bytes());
        key.push(b':');
        key.extend_from_slice(ev.source.as_bytes());
        key.push(b':');
        key.extend_from_slice(ev.time_unix_ms.div_euclid(HOUR_MS).to_string().as_bytes());
        key.push(b':');
        key.extend_from_slice(ev.url.as_bytes());
        c.push(&[b"HINCRBY", &key, ev.action_type.as_bytes(), b"1"]);
        pending += 1;
        if ev.clicked_through {
            c.push(&[b"HINCRBY", &key, b"ClickedThrough", b"1"]);
            pending += 1;
        }
        run.events += 1;
        if pending >= PIPELINE {
            c.flush(pending)?;
            run.commands += pending as u64;
            pending = 0;
        }
    }
    c.flush(pending)?;
    run.commands += pending as u64;
    run.secs = started.elapsed().as_secs_f64();
    Ok(run)
}
