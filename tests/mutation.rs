//! Every file the tool reads, damaged many times over: seed files the tests
//! make (valid ones) mutated deterministically (bit flips, bytes inserted
//! and deleted, truncations, little-endian length fields set to 0, huge and
//! negative, JSON values swapped for other types, tar header fields
//! rewritten), each of which must give an error or a valid value. No panic
//! (caught per case, named with its seed), no hang (a watchdog aborts a case
//! past 20 s), no allocation past a cap (a counting allocator: a length field
//! must not make a reader ask for gigabytes; one over 256 MiB fails its case
//! by name, one over 4 GiB is refused, which aborts the test).
//!
//! `MUTATIONS` cases per reader (10,000; `RESNET_WGPU_MUTATIONS=N` for a
//! longer local run). No GPU is needed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use resnet_wgpu::data::cifar10_from_files;
use resnet_wgpu::gpu::{GpuContext, KernelChoices, ModeledGpu};
use resnet_wgpu::seeded::SeededRng;
use resnet_wgpu::train::TrainConfig;
use resnet_wgpu::train::checkpoint::{StateDict, Values, encode_safetensors};

/// The largest single allocation a case may make.
const ALLOCATION_CAP: usize = 256 << 20;
/// Past this the allocator refuses (the process aborts) rather than take
/// the machine's memory.
const HARD_CAP: usize = 4 << 30;

/// Records allocations above the cap (and still makes them up to the hard
/// cap, so the test can name the case instead of aborting).
struct CappedAllocator;

static OVER_CAP: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            OVER_CAP.fetch_max(layout.size(), Ordering::Relaxed);
            if layout.size() > HARD_CAP {
                return std::ptr::null_mut();
            }
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_CAP {
            OVER_CAP.fetch_max(new_size, Ordering::Relaxed);
            if new_size > HARD_CAP {
                return std::ptr::null_mut();
            }
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

fn mutations() -> u64 {
    std::env::var("RESNET_WGPU_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// One damaged copy of `seed`, case `case` of reader `salt`.
fn mutate(seed: &[u8], salt: u64, case: u64) -> Vec<u8> {
    let mut rng = SeededRng::seed_from_u64(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ case);
    let mut bytes = seed.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let len = bytes.len().max(1);
        let at = rng.random_range(0..len);
        match rng.random_range(0..9) {
            0 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            1 => bytes.insert(at.min(bytes.len()), rng.random()),
            2 if !bytes.is_empty() => {
                bytes.remove(at.min(bytes.len() - 1));
            }
            3 => bytes.truncate(at),
            // A little-endian length or offset field set to 0, huge or negative.
            4..=6 => {
                let value: u64 = match rng.random_range(0..4) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => (-1i64) as u64,
                    _ => 1 << rng.random_range(20..62),
                };
                let width = if rng.random() { 8 } else { 4 };
                for (i, b) in value.to_le_bytes()[..width].iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            // A run of bytes copied elsewhere (a duplicated key, a shifted field).
            7 => {
                let end = (at + rng.random_range(1..64)).min(bytes.len());
                let piece = bytes[at.min(end)..end].to_vec();
                let to = rng.random_range(0..bytes.len().max(1)).min(bytes.len());
                bytes.splice(to..to, piece);
            }
            _ => swap_json_value(&mut bytes, &mut rng),
        }
    }
    bytes
}

/// Replaces one JSON scalar (after a ':' or in an array) with a value of
/// another type, so readers see strings for numbers, nulls, objects...
fn swap_json_value(bytes: &mut Vec<u8>, rng: &mut SeededRng) {
    let colons: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b':').collect();
    if colons.is_empty() {
        return;
    }
    let at = colons[rng.random_range(0..colons.len())] + 1;
    let end = (at..bytes.len())
        .find(|&i| matches!(bytes[i], b',' | b'}' | b']' | b'\n'))
        .unwrap_or(bytes.len());
    let values: [&[u8]; 8] = [
        b"null",
        b"\"x\"",
        b"-1",
        b"1e400",
        b"18446744073709551616",
        b"[]",
        b"{}",
        b"true",
    ];
    bytes.splice(
        at..end,
        values[rng.random_range(0..values.len())].iter().copied(),
    );
}

/// Runs `read` on `MUTATIONS` damaged copies of `seed`: each must return
/// (an error or a value) without panicking, within the watchdog's time and
/// the allocation cap. The seed itself must read.
fn survives(name: &str, salt: u64, seed: &[u8], read: impl Fn(&[u8]) -> bool) {
    survives_mutations(name, salt, seed, mutate, read);
}

/// `survives` with its own mutator.
fn survives_mutations(
    name: &str,
    salt: u64,
    seed: &[u8],
    mutate: impl Fn(&[u8], u64, u64) -> Vec<u8>,
    read: impl Fn(&[u8]) -> bool,
) {
    assert!(read(seed), "{name}: the valid seed file is refused");
    let started = AtomicU64::new(u64::MAX);
    let epoch = Instant::now();
    let n = mutations();
    let (mut refused, mut read_ok) = (0u64, 0u64);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // The watchdog: one case past 20 s is a hang.
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let case = started.load(Ordering::Relaxed);
                let since = epoch.elapsed().as_millis() as u64;
                if case != u64::MAX && since > CASE_STARTED.load(Ordering::Relaxed) + 20_000 {
                    eprintln!("{name}: mutation {case} (salt {salt}) hangs");
                    std::process::abort();
                }
            }
        });
        for case in 0..n {
            let bytes = mutate(seed, salt, case);
            CASE_STARTED.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            started.store(case, Ordering::Relaxed);
            OVER_CAP.store(0, Ordering::Relaxed);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&bytes)));
            started.store(u64::MAX, Ordering::Relaxed);
            let over = OVER_CAP.load(Ordering::Relaxed);
            assert!(
                over == 0,
                "{name}: mutation {case} (salt {salt}) asked for {over} bytes at once from a \
                 {}-byte file",
                bytes.len()
            );
            match outcome {
                Ok(true) => read_ok += 1,
                Ok(false) => refused += 1,
                Err(_) => panic!("{name}: mutation {case} (salt {salt}) panicked the reader"),
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "{name}: {n} mutations, {refused} refused, {read_ok} read as valid, {:.1} s",
        epoch.elapsed().as_secs_f64()
    );
}

static CASE_STARTED: AtomicU64 = AtomicU64::new(0);

/// A private folder for the readers that take a path.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "resnet-wgpu-mutation-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn safetensors_reader_survives_10000_mutations() {
    let tensors = vec![
        (
            "a.weight".to_string(),
            vec![2, 3],
            Values::F32((0..6).map(|v| v as f32).collect()),
        ),
        (
            "b.bias".to_string(),
            vec![3],
            Values::F16(vec![0.5, -1.0, 2.0]),
        ),
        (
            "c.running_var".to_string(),
            vec![2],
            Values::BF16(vec![1.0, 3.0]),
        ),
        (
            "c.num_batches_tracked".to_string(),
            vec![],
            Values::I64(vec![7]),
        ),
    ];
    let meta = HashMap::from([("model".to_string(), "resnet8".to_string())]);
    let path = Path::new("mutated.safetensors");
    let seed = encode_safetensors(&tensors, meta, path).unwrap();
    survives("safetensors", 1, &seed, |bytes| {
        StateDict::from_bytes(bytes, path).is_ok()
    });
}

#[test]
fn cifar_reader_survives_10000_mutations() {
    // Two records per file (label byte + 3072 pixel bytes) and the class names.
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    let batch: Vec<u8> = [record(1), record(7)].concat();
    let mut files: Vec<(String, Vec<u8>)> = (1..=5)
        .map(|i| (format!("data_batch_{i}.bin"), batch.clone()))
        .collect();
    files.push(("test_batch.bin".into(), batch.clone()));
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    files.push(("batches.meta.txt".into(), names.as_bytes().to_vec()));
    // The damaged file: a batch, or the class names (salted apart).
    for (salt, damaged) in [(2, 0), (3, 6)] {
        let seed = files[damaged].1.clone();
        let name = format!("CIFAR {}", files[damaged].0);
        survives(&name, salt, &seed, |bytes| {
            let mut set = files.clone();
            set[damaged].1 = bytes.to_vec();
            cifar10_from_files(&set).is_ok()
        });
    }
}

/// A run's config.json as this build writes it (a training test's, parsed
/// and written again, so the seed follows the current format).
fn config_seed() -> Vec<u8> {
    let text = include_str!("fixtures/config_seed.json");
    let config: TrainConfig = serde_json::from_str(text).unwrap();
    serde_json::to_vec_pretty(&config).unwrap()
}

#[test]
fn run_config_reader_survives_10000_mutations() {
    let seed = config_seed();
    let shape = resnet_wgpu::shapes::ImageShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    survives("config.json", 4, &seed, |bytes| {
        serde_json::from_slice::<TrainConfig>(bytes)
            .ok()
            .is_some_and(|c| c.validate(shape).is_ok())
    });
}

#[test]
fn metrics_log_reader_survives_10000_mutations() {
    let dir = scratch("metrics");
    let line = r#"{"epoch":1.0,"step":4,"train_loss":2.31,"train_acc":0.125,"test_loss":2.29,"test_acc":0.1,"lr":0.1,"images_per_sec":12.5,"elapsed_s":3.5}"#;
    let seed = format!("{line}\n{}\n", line.replace("\"step\":4", "\"step\":8"));
    survives("metrics.jsonl", 5, seed.as_bytes(), |bytes| {
        std::fs::write(dir.join("metrics.jsonl"), bytes).unwrap();
        resnet_wgpu::run_folder::read_metrics(&dir).is_ok()
    });
}

#[test]
fn kernel_choices_reader_survives_10000_mutations() {
    let dir = scratch("choices");
    let path = dir.join("kernel-choices.json");
    let info = GpuContext::modeled(&ModeledGpu::h100())
        .unwrap()
        .adapter_info;
    let mut choices = KernelChoices::load_from(&info, Some(path.clone()));
    for (key, kernel) in [
        ("conv forward f32 a", "tiled64x64"),
        ("batchnorm reduce b", "tree"),
    ] {
        let choice = resnet_wgpu::gpu::Choice {
            kernel: kernel.into(),
            ms: 1.5,
        };
        choices.insert(key.into(), choice);
    }
    choices.save().unwrap();
    let seed = std::fs::read(&path).unwrap();
    // A damaged cache is an empty one, never an error: "valid" = it kept
    // entries, and never more than the file held.
    survives("kernel-choices.json", 6, &seed, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let loaded = KernelChoices::load_from(&info, Some(path.clone()));
        assert!(
            loaded.len() <= 2,
            "{} choices from a file of 2",
            loaded.len()
        );
        !loaded.is_empty()
    });
}

/// A tiny image folder packed as WebDataset shards by `pack`.
fn packed_shards() -> PathBuf {
    let root = scratch("shards-src");
    for (class, shade) in [("cat", 40u8), ("dog", 200)] {
        for split in ["train", "val"] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..2u8 {
                let img = image::RgbImage::from_fn(9, 7, |x, y| {
                    image::Rgb([shade, (x * 20) as u8 + i, (y * 30) as u8])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let out = scratch("shards");
    let options = resnet_wgpu::data::shards::PackOptions {
        max_side: 16,
        shard_bytes: 1 << 20,
        quality: 90,
        workers: 1,
    };
    resnet_wgpu::data::shards::pack(&root, &out, options).unwrap();
    out
}

/// Half the cases rewrite a tar header field the generic mutations rarely
/// hit: a member's size (octal, offset 124) or checksum (148) as another
/// number, garbage or nothing; the other half are the generic ones.
fn mutate_tar(seed: &[u8], salt: u64, case: u64) -> Vec<u8> {
    let mut rng = SeededRng::seed_from_u64(salt ^ case.wrapping_mul(0x2545_F491_4F6C_DD1D));
    if rng.random() {
        return mutate(seed, salt, case);
    }
    let mut bytes = seed.to_vec();
    let headers: Vec<usize> = (0..bytes.len() / 512)
        .map(|b| 512 * b)
        .filter(|&at| {
            bytes[at..at + 100].iter().any(|&c| c != 0) && bytes[at + 257..].starts_with(b"ustar")
        })
        .collect();
    if headers.is_empty() {
        return mutate(seed, salt, case);
    }
    let at = headers[rng.random_range(0..headers.len())];
    let (field, width) = if rng.random() { (124, 12) } else { (148, 8) };
    let texts: [String; 5] = [
        format!("{:o}", rng.random::<u32>()),
        "77777777777".into(),
        "-1".into(),
        "zz".into(),
        String::new(),
    ];
    let text = &texts[rng.random_range(0..texts.len())];
    let mut value = text.as_bytes().to_vec();
    value.resize(width, 0);
    bytes[at + field..at + field + width].copy_from_slice(&value);
    bytes
}

#[test]
fn tar_shard_reader_survives_10000_mutations() {
    let packed = packed_shards();
    let shard = std::fs::read_dir(packed.join("train"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tar"))
        .expect("a train shard");
    let seed = std::fs::read(&shard).unwrap();
    survives_mutations("WebDataset tar", 7, &seed, mutate_tar, |bytes| {
        std::fs::write(&shard, bytes).unwrap();
        resnet_wgpu::data::shards::load_shards(&packed, 8).is_ok()
    });
}

#[test]
fn picture_decoder_survives_10000_mutations_of_png_and_jpeg() {
    let dir = scratch("pictures");
    let img = image::RgbImage::from_fn(13, 11, |x, y| {
        image::Rgb([(x * 19) as u8, (y * 23) as u8, 99])
    });
    for (salt, ext) in [(8, "png"), (9, "jpg")] {
        let path = dir.join(format!("seed.{ext}"));
        img.save(&path).unwrap();
        let seed = std::fs::read(&path).unwrap();
        let damaged = dir.join(format!("damaged.{ext}"));
        survives(&format!("{ext} decoder"), salt, &seed, |bytes| {
            std::fs::write(&damaged, bytes).unwrap();
            resnet_wgpu::data::load_image(&damaged, 8, 0.875).is_ok()
        });
    }
}
