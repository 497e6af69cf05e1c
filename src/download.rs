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

/// Fetches `archive` into `to` and unpacks it; returns the data folder. An
/// existing complete folder is kept (nothing is fetched).
pub fn download(archive: &Archive<'_>, to: &Path) -> Result<PathBuf> {
    let target = to.join(archive.folder);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let file_name = archive.url.rsplit('/').next().unwrap_or("archive.tar.gz");
    let part = to.join(format!("{file_name}.part"));
    fetch(archive.url, &part)?;
    let digest = md5_of(&part)?;
    if digest != archive.md5 {
        let _ = std::fs::remove_file(&part);
        bail!(
            "{}: MD5 {digest}, expected {}; the download is damaged or not the published \
             archive (removed; run download again)",
            archive.url,
            archive.md5
        );
    }
    let unpacking = to.join(format!(".{}.unpacking", archive.folder));
    let _ = std::fs::remove_dir_all(&unpacking);
    unpack(&part, &unpacking)?;
    let unpacked = unpacking.join(archive.folder);
    if !unpacked.is_dir() {
        let _ = std::fs::remove_dir_all(&unpacking);
        bail!(
            "{}: the archive holds no {} folder",
            archive.url,
            archive.folder
        );
    }
    std::fs::rename(&unpacked, &target)
        .with_context(|| format!("moving the data into {}", target.display()))?;
    let _ = std::fs::remove_dir_all(&unpacking);
    let _ = std::fs::remove_file(&part);
    Ok(target)
}

/// curl `url` into `to` (following redirects, failing on HTTP errors).
fn fetch(url: &str, to: &Path) -> Result<()> {
    let status = Command::new("curl")
        .args(["--fail", "--location", "--silent", "--show-error", "--output"])
        .arg(to)
        .arg(url)
        .status()
        .context("running curl (download fetches with it; install curl, or fetch the archive yourself and unpack it)")?;
    if !status.success() {
        let _ = std::fs::remove_file(to);
        bail!("curl could not fetch {url} ({status})");
    }
    Ok(())
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
