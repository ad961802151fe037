//! What one of the health gate's listener looks costs (`sock_diag::InNetns::count`, as
//! `engine/compose/listener_look.rs` asks it): a process in a network namespace of its own
//! listens on 8080 there, and 20,000 looks for a listener on another port (the answer the gate
//! gets while the app boots) are timed back to back, wall and CPU (the CPU from
//! `/proc/self/stat`'s 10 ms ticks: ~0.5 s of them, so within ~2%). A gate's round also pays a
//! timer's wake-up, not counted here. Needs root (unshare, setns) and python3.
//!
//!   cargo run --release --example look-cost [-- LOOKS]

use std::io::BufRead as _;

use cutover::sock_diag::{InNetns, State};

fn main() -> anyhow::Result<()> {
    let looks: u32 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 20_000,
    };
    let mut inside = std::process::Command::new("unshare")
        .args(["--net", "python3", "-c"])
        .arg(
            "import socket,sys\ns=socket.socket(); s.bind(('0.0.0.0',8080)); s.listen()\n\
             print('listening', flush=True); sys.stdin.readline()\n",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut said = String::new();
    std::io::BufReader::new(inside.stdout.take().expect("piped")).read_line(&mut said)?;
    anyhow::ensure!(
        said.trim() == "listening",
        "the namespace's process said {said:?}"
    );
    let mut look = InNetns::of_process(inside.id(), |_| Ok(()))?;
    anyhow::ensure!(look.count(State::Listening, &[8080])? == 1);
    let (cpu, wall) = (cpu_seconds()?, std::time::Instant::now());
    for _ in 0..looks {
        anyhow::ensure!(look.count(State::Listening, &[8081])? == 0);
    }
    let (cpu, wall) = (cpu_seconds()? - cpu, wall.elapsed().as_secs_f64());
    println!(
        "{looks} looks: {:.3} ms wall, {:.3} ms CPU each",
        wall * 1e3 / f64::from(looks),
        cpu * 1e3 / f64::from(looks)
    );
    drop(inside.stdin.take());
    inside.wait()?;
    Ok(())
}

/// This process's user + system CPU time (`/proc/self/stat`, in the kernel's 100 Hz ticks).
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("/proc/self/stat has no field {i}"))?
            .parse()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
