//! Helpers shared by the cross-process integration tests.
//!
//! Child processes are the test binary run again (`current_exe`) with only
//! its `child_entry` test selected and `SHMT_CHILD_ROLE` set; without that
//! variable `child_entry` does nothing, so it passes in a normal run. A child
//! reports to its parent with `SHMT:key=value` lines on stdout (`say`) and,
//! when started by `spawn_with_cues`, takes its cues as lines on stdin
//! (`await_cue`).
//!
//! Every test binary uses only some of these, hence the `allow(dead_code)`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use shmtools_core::queue::QueueHeader;
use shmtools_core::{AttachOptions, CreateOptions, Key, PoolCheck, PoolStats, Region, Values};

/// Offsets of a queue header's fields, for white-box tests that read or
/// damage them.
pub const Q_DEQ_LOCK: u64 = std::mem::offset_of!(QueueHeader, deq_lock) as u64;
pub const Q_ENQ_LOCK: u64 = std::mem::offset_of!(QueueHeader, enq_lock) as u64;
pub const Q_HEAD: u64 = std::mem::offset_of!(QueueHeader, head) as u64;
pub const Q_TAIL: u64 = std::mem::offset_of!(QueueHeader, tail) as u64;
pub const Q_FRONT_POS: u64 = std::mem::offset_of!(QueueHeader, front_pos) as u64;
pub const Q_FRONT: u64 = std::mem::offset_of!(QueueHeader, front) as u64;
pub const Q_SLOTS: u64 = std::mem::offset_of!(QueueHeader, slots) as u64;
pub const Q_BLOCK: u64 = std::mem::offset_of!(QueueHeader, block) as u64;
pub const Q_RING_WRITE: u64 = std::mem::offset_of!(QueueHeader, ring_write) as u64;
pub const Q_RING_READ: u64 = std::mem::offset_of!(QueueHeader, ring_read) as u64;
pub const Q_RING_READ_SEEN: u64 = std::mem::offset_of!(QueueHeader, ring_read_seen) as u64;
pub const Q_RING: u64 = std::mem::offset_of!(QueueHeader, ring) as u64;
pub const Q_RING_SIZE: u64 = std::mem::offset_of!(QueueHeader, ring_size) as u64;

/// The role a child process plays (the variable that makes it a child).
pub const ROLE: &str = "SHMT_CHILD_ROLE";
/// The region a child works on.
pub const REGION: &str = "SHMT_REGION";
pub const SEED: &str = "SHMT_SEED";
pub const OPS: &str = "SHMT_OPS";
pub const OFFSET: &str = "SHMT_OFFSET";
pub const ID: &str = "SHMT_ID";
/// What starts a child's report line on stdout.
pub const MARK: &str = "SHMT:";

/// How long a child waits for its region before giving up (a safety net
/// against a hung test, not an expectation about speed).
pub const CHILD_ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

// ---- regions ----------------------------------------------------------------

/// A region name that holds this process's id, the test file's `scope`
/// (empty, or ending in '-') and a test tag.
pub fn unique_name(scope: &str, tag: &str) -> String {
    format!("shmt-test-{}-{scope}{tag}", std::process::id())
}

/// Removes a region name when dropped, so a failing test leaves no litter.
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = Region::remove(&self.0);
    }
}

pub fn create(name: &str, bytes: u64) -> Region {
    Region::create(name, bytes, &CreateOptions::default())
        .unwrap_or_else(|e| panic!("creating {name}: {e}"))
}

pub fn attach_opts<'a>(timeout: Duration) -> AttachOptions<'a> {
    AttachOptions {
        timeout: Some(timeout),
        poll: Duration::from_millis(5),
        ..AttachOptions::default()
    }
}

pub fn attach(name: &str) -> Region {
    Region::attach(name, &attach_opts(CHILD_ATTACH_TIMEOUT))
        .unwrap_or_else(|e| panic!("attaching {name}: {e}"))
}

/// The pool's figures at some moment, to compare against later.
#[derive(Debug, PartialEq, Eq)]
pub struct Baseline {
    pub stats: PoolStats,
    pub check: PoolCheck,
}

pub fn baseline(vals: &Values<'_>) -> Baseline {
    Baseline {
        stats: vals.pool().stats().expect("stats"),
        check: vals.pool().check().expect("a consistent pool"),
    }
}

pub fn ks(x: &str) -> Key {
    Key::Str(x.to_string())
}

/// splitmix64: small, seedable, good enough to drive tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---- the parent's side of a child process -----------------------------------

/// A child process running `child_entry` in one role.
pub struct Proc {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    seen: HashMap<String, String>,
    transcript: String,
}

/// Start a child in `role` on `region`, with `env` set and no stdin.
pub fn spawn(role: &str, region: &str, env: &[(&str, String)]) -> Proc {
    spawn_child(role, region, env, Stdio::null())
}

/// As `spawn`, but the child's stdin is a pipe that `Proc::send` writes cues to.
pub fn spawn_with_cues(role: &str, region: &str, env: &[(&str, String)]) -> Proc {
    spawn_child(role, region, env, Stdio::piped())
}

fn spawn_child(role: &str, region: &str, env: &[(&str, String)], stdin: Stdio) -> Proc {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(REGION, region)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn a child test process");
    let stdin = child.stdin.take();
    let out = BufReader::new(child.stdout.take().expect("piped stdout"));
    Proc {
        child: Some(child),
        stdin,
        out,
        seen: HashMap::new(),
        transcript: String::new(),
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child not reaped").id()
    }

    fn note(&mut self, line: &str) {
        self.transcript.push_str(line);
        if let Some((k, v)) = line
            .find(MARK)
            .and_then(|at| line[at + MARK.len()..].trim_end().split_once('='))
        {
            self.seen.insert(k.to_string(), v.to_string());
        }
    }

    /// Read the child's output up to the report `key` and return its value.
    pub fn expect(&mut self, key: &str) -> String {
        loop {
            if let Some(v) = self.seen.get(key) {
                return v.clone();
            }
            let mut line = String::new();
            let n = self.out.read_line(&mut line).expect("read child output");
            assert!(
                n > 0,
                "child ended without reporting '{key}'; its output:\n{}",
                self.transcript
            );
            self.note(&line);
        }
    }

    pub fn expect_u64(&mut self, key: &str) -> u64 {
        let v = self.expect(key);
        v.parse()
            .unwrap_or_else(|_| panic!("report {key}={v} is not a number"))
    }

    /// Give the child its next cue (only for `spawn_with_cues`).
    pub fn send(&mut self, cue: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cue}").expect("write to the child");
        stdin.flush().expect("flush to the child");
    }

    /// Wait for the child to finish; it must exit with status 0.
    pub fn finish_ok(mut self) -> HashMap<String, String> {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.out
            .read_to_string(&mut rest)
            .expect("read child output");
        for line in rest.lines() {
            self.note(&format!("{line}\n"));
        }
        let status = self
            .child
            .take()
            .expect("child not reaped")
            .wait()
            .expect("wait for child");
        assert!(
            status.success(),
            "child failed ({status}); its output:\n{}",
            self.transcript
        );
        std::mem::take(&mut self.seen)
    }

    /// SIGKILL the child but leave it unreaped: a zombie, whose /proc entry
    /// stays until our drop reaps it.
    pub fn kill_leaving_a_zombie(&mut self) {
        self.child
            .as_mut()
            .expect("child not reaped")
            .kill()
            .expect("kill the child");
    }

    /// SIGKILL the child and reap it (so its pid and tids are gone).
    pub fn kill_and_reap(&mut self) {
        let mut child = self.child.take().expect("child not reaped");
        child.kill().expect("kill the child");
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "the child was killed, not finished");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---- the child's side ---------------------------------------------------------

/// Report `key=value` to the parent.
pub fn say(key: &str, value: impl Display) {
    // A leading newline: libtest may have written "test child_entry ... ".
    println!("\n{MARK}{key}={value}");
}

/// Wait for the parent's next cue on stdin; it must be `cue`.
pub fn await_cue(cue: &str) {
    let mut line = String::new();
    let n = std::io::stdin()
        .read_line(&mut line)
        .expect("read the parent's cue");
    assert!(n > 0, "the parent went away before sending '{cue}'");
    assert_eq!(line.trim_end(), cue, "unexpected cue");
}

/// The child's role and region, or None in the parent's own run of
/// `child_entry`.
pub fn child_role() -> Option<(String, String)> {
    let role = std::env::var(ROLE).ok()?;
    let region = std::env::var(REGION).expect("SHMT_REGION set for children");
    Some((role, region))
}

pub fn env_str(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

pub fn env_u64(key: &str) -> u64 {
    env_str(key)
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number"))
}

/// Removes a file (a stop marker) when dropped, also when a test fails.
pub struct RemoveFileOnDrop(pub std::path::PathBuf);

impl Drop for RemoveFileOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A seed for a randomized test: from the environment variable `var` when set
/// (to replay a run), else from the clock and the pid.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s} is not a number")),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            t ^ (u64::from(std::process::id()) << 32)
        }
    }
}
