//! `download`: CIFAR-10/100 (binary versions) fetched with curl, checked
//! against the MD5 the CIFAR page publishes, and unpacked. Atomic: the
//! archive is fetched to a `.part` file and unpacked into a temporary folder
//! that is renamed into place only when complete, so an interrupted or failed
//! download never leaves a folder that looks like data.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use md5::Digest;

/// One dataset archive as published.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    pub url: &'a str,
    pub md5: &'a str,
    /// The folder the archive holds (what `--data` then names).
    pub folder: &'a str,
}

/// The datasets `download` knows: name, archive.
pub const ARCHIVES: [(&str, Archive<'static>); 2] = [
    (
        "cifar10",
        Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
            folder: "cifar-10-batches-bin",
        },
    ),
    (
        "cifar100",
        Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
            folder: "cifar-100-binary",
        },
    ),
];

/// How a transfer is watched.
pub struct Transfer<'a> {
    /// Give up when under `STALL_BYTES_PER_SECOND` arrive for this long.
    pub stall_seconds: u32,
    /// A stop signal received (its number), checked while curl runs.
    pub stopped: &'a dyn Fn() -> Option<i32>,
}

/// The slowest transfer that is still making progress.
pub const STALL_BYTES_PER_SECOND: u32 = 1024;
/// How long to wait for the server to accept the connection.
const CONNECT_SECONDS: u32 = 30;

/// Why a download ended early on purpose: a stop signal (its number).
#[derive(Debug, thiserror::Error)]
#[error("stopped by signal {0}; nothing was kept")]
pub struct Interrupted(pub i32);

/// Fetches `archive` into `to` and unpacks it; returns the data folder. An
/// existing folder that holds the data is kept (nothing is fetched); an empty
/// one is filled. Nothing but the finished folder is left behind: the `.part`
/// file and the unpacking folder go on success, failure and stop signals.
pub fn download(archive: &Archive<'_>, to: &Path, transfer: &Transfer<'_>) -> Result<PathBuf> {
    let target = to.join(archive.folder);
    if holds_data(&target)? {
        return Ok(target);
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let file_name = archive.url.rsplit('/').next().unwrap_or("archive.tar.gz");
    let part = to.join(format!("{file_name}.part"));
    let unpacking = to.join(format!(".{}.unpacking", archive.folder));
    let _leftovers = RemovedOnDrop(vec![part.clone(), unpacking.clone()]);
    fetch(archive.url, &part, transfer)?;
    let digest = md5_of(&part)?;
    if digest != archive.md5 {
        bail!(
            "{}: MD5 {digest}, expected {}; the download is damaged or not the published \
             archive (removed; run download again)",
            archive.url,
            archive.md5
        );
    }
    let _ = std::fs::remove_dir_all(&unpacking);
    unpack(&part, &unpacking)?;
    if let Some(signal) = (transfer.stopped)() {
        return Err(Interrupted(signal).into());
    }
    let unpacked = unpacking.join(archive.folder);
    if !unpacked.is_dir() {
        bail!(
            "{}: the archive holds no {} folder",
            archive.url,
            archive.folder
        );
    }
    if target.is_dir() {
        // Empty (holds_data said so): the unpacked folder takes its place.
        std::fs::remove_dir(&target)
            .with_context(|| format!("replacing the empty folder {}", target.display()))?;
    }
    std::fs::rename(&unpacked, &target)
        .with_context(|| format!("moving the data into {}", target.display()))?;
    Ok(target)
}

/// Whether `folder` is there with data in it. An empty folder is not: it is
/// what a `mkdir` or an unpack stopped by hand leaves. A folder with other
/// files is refused rather than filled or replaced (they may be someone's).
fn holds_data(folder: &Path) -> Result<bool> {
    let Ok(mut entries) = std::fs::read_dir(folder) else {
        return Ok(false);
    };
    if entries.next().is_none() {
        return Ok(false);
    }
    if crate::data::DataSource::detect(folder).is_err() {
        bail!(
            "{} exists but holds no CIFAR data; move it away (or pass another --to) and \
             download again",
            folder.display()
        );
    }
    Ok(true)
}

/// Paths removed (files or folders) when it goes out of scope.
struct RemovedOnDrop(Vec<PathBuf>);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// curl `url` into `to` (following redirects, failing on HTTP errors,
/// giving up on a stalled transfer), stopping curl when a stop signal
/// arrives. curl runs in its own process group, so a terminal's Ctrl-C
/// reaches this process, which stops curl and cleans up, rather than
/// killing curl mid-write.
fn fetch(url: &str, to: &Path, transfer: &Transfer<'_>) -> Result<()> {
    // Created here, so that a --to that cannot be written is named as such.
    std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut command = Command::new("curl");
    command
        .args(["--fail", "--location", "--silent", "--show-error"])
        .args(["--connect-timeout", &CONNECT_SECONDS.to_string()])
        .args(["--speed-limit", &STALL_BYTES_PER_SECOND.to_string()])
        .args(["--speed-time", &transfer.stall_seconds.to_string()])
        .arg("--output")
        .arg(to)
        .arg(url)
        .stderr(std::process::Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut curl = command
        .spawn()
        .context("running curl (download fetches with it; install curl, or fetch the archive yourself and unpack it)")?;
    let status = loop {
        if let Some(status) = curl.try_wait().context("waiting for curl")? {
            break status;
        }
        if let Some(signal) = (transfer.stopped)() {
            let _ = curl.kill();
            let _ = curl.wait();
            return Err(Interrupted(signal).into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if !status.success() {
        let mut said = String::new();
        if let Some(mut stderr) = curl.stderr.take() {
            let _ = stderr.read_to_string(&mut said);
        }
        bail!(
            "{url}: {}",
            curl_failure(status.code(), said.trim(), to, transfer)
        );
    }
    Ok(())
}

/// curl's failure in words, by its exit code (its own message otherwise).
fn curl_failure(code: Option<i32>, said: &str, part: &Path, transfer: &Transfer<'_>) -> String {
    match code {
        Some(6) => "the host name does not resolve (offline, or a typo in --url?)".into(),
        Some(7) => "the server refused or did not answer the connection".into(),
        Some(22) => format!("the server answered with an error ({said})"),
        Some(23) => format!("could not write {} (disk full?)", part.display()),
        Some(28) => format!(
            "the transfer stalled (under {} KiB/s for {} s, --stall-timeout) or no connection \
             was made in {CONNECT_SECONDS} s; run download again",
            STALL_BYTES_PER_SECOND / 1024,
            transfer.stall_seconds
        ),
        _ if said.is_empty() => format!("curl failed ({code:?})"),
        _ => format!("curl: {said}"),
    }
}

fn md5_of(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = md5::Md5::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn unpack(archive: &Path, into: &Path) -> Result<()> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(into)
        .with_context(|| format!("{}: not a readable .tar.gz", archive.display()))
}
