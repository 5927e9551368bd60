//! `vdisk`: a small operator CLI over vireo-disk (create, info, map, read/write patterns,
//! snapshot, commit, rebase, check, cbt, bench, convert, import). Exit codes: 0 ok, 1 error, 2 usage, 3 verify
//! mismatch, 4 check found corruption, 5 check found leaks only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::json;
use vireo_disk::chain::{commit, rebase};
use vireo_disk::convert::{convert, open_source, TargetFormat};
use vireo_disk::open::{probe_format, ImageFormat};
use vireo_disk::qcow2::{
    create, format_name, BackingSpec, CreateOptions, ExtentKind, Qcow2Image, Qcow2Options,
};
use vireo_disk::tree::DiskTree;
use vireo_disk::vmdk::{import_vmdk_stream, write_stream_optimized};
use vireo_disk::{open_disk, BlockError, SharedDisk};

#[derive(Parser)]
#[command(
    name = "vdisk",
    about = "Inspect and manipulate Vireo virtual disks (qcow2/raw; VMDK convert/import)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a qcow2 image (SIZE defaults to the backing file's size)
    Create {
        /// Backing file (stored as given; relative names resolve against FILE's folder)
        #[arg(short = 'b', long)]
        backing: Option<String>,
        /// Cluster size in bytes (suffixes K, M), 4K..2M
        #[arg(long, default_value = "64K")]
        cluster_size: String,
        /// Image to create
        file: PathBuf,
        /// Virtual size in bytes (suffixes K, M, G, T)
        size: Option<String>,
    },
    /// Show the image's header facts
    Info {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// The image
        file: PathBuf,
    },
    /// Check refcounts against the metadata (exit 4: corruption, 5: leaks only)
    Check {
        /// Rewrite wrong refcounts and clear the dirty bit
        #[arg(long)]
        repair: bool,
        /// The image
        file: PathBuf,
    },
    /// Show what each guest range of the top layer maps to
    Map {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// The image
        file: PathBuf,
    },
    /// Write a byte pattern
    Write {
        /// The image
        file: PathBuf,
        /// Start in bytes
        #[arg(long)]
        offset: String,
        /// Length in bytes
        #[arg(long)]
        length: String,
        /// The byte to write
        #[arg(long)]
        pattern: String,
    },
    /// Read a range and verify it holds a byte pattern (exit 3 if not)
    Read {
        /// The image
        file: PathBuf,
        /// Start in bytes
        #[arg(long)]
        offset: String,
        /// Length in bytes
        #[arg(long)]
        length: String,
        /// The byte expected
        #[arg(long)]
        pattern: String,
    },
    /// Freeze FILE and start NEW as a qcow2 overlay on top of it
    Snapshot {
        /// The layer to freeze
        file: PathBuf,
        /// The new active layer
        new: PathBuf,
    },
    /// Copy FILE's data into its backing file, then empty FILE (unless -d)
    Commit {
        /// Keep FILE's data
        #[arg(short = 'd')]
        keep: bool,
        /// Show progress
        #[arg(short = 'p')]
        progress: bool,
        /// The top layer
        file: PathBuf,
    },
    /// Change FILE's backing file keeping its content ("" = no backing file)
    Rebase {
        /// New backing file ("" for none)
        #[arg(short = 'b')]
        backing: String,
        /// Show progress
        #[arg(short = 'p')]
        progress: bool,
        /// The layer to rebase
        file: PathBuf,
    },
    /// Copy a disk (raw, qcow2 chain, VMDK) into a new file of another format
    Convert {
        /// Output format: qcow2, raw, vmdk[,subformat=monolithicSparse|streamOptimized]
        #[arg(short = 'O', default_value = "qcow2")]
        format: String,
        /// Show progress
        #[arg(short = 'p')]
        progress: bool,
        /// The disk to copy
        src: PathBuf,
        /// The new file ("-": standard output, streamOptimized VMDK only)
        dst: PathBuf,
    },
    /// Convert a VMDK read as a stream (streamOptimized, or monolithicSparse with its
    /// metadata first) into a new qcow2
    Import {
        /// Show progress
        #[arg(short = 'p')]
        progress: bool,
        /// The VMDK ("-": standard input)
        src: PathBuf,
        /// The new qcow2 image
        dst: PathBuf,
    },
    /// Changed-block tracking of a disk (FILE: its root layer or its .vtree sidecar)
    Cbt {
        #[command(subcommand)]
        action: CbtAction,
    },
    /// Measure I/O like `qemu-img bench`
    Bench {
        /// Write instead of read
        #[arg(short = 'w')]
        write: bool,
        /// Request size (suffixes K, M)
        #[arg(short = 's', default_value = "4K")]
        size: String,
        /// Number of requests
        #[arg(short = 'c', default_value_t = 75000)]
        count: u64,
        /// Requests in flight at once (one worker thread each)
        #[arg(short = 'd', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        depth: u16,
        /// Offset of the first request
        #[arg(short = 'o', default_value = "0")]
        offset: String,
        /// Distance between requests (default: the request size); wraps at the disk's end
        #[arg(short = 'S')]
        step: Option<String>,
        /// Random aligned offsets instead of steps
        #[arg(long)]
        random: bool,
        /// Flush after the run and include it in the time
        #[arg(long)]
        flush: bool,
        /// Byte written by write requests
        #[arg(long, default_value = "0")]
        pattern: String,
        /// The image
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CbtAction {
    /// Start tracking; prints the changeId of now
    Enable {
        /// The disk
        file: PathBuf,
    },
    /// Stop tracking; every changeId issued becomes unusable
    Disable {
        /// The disk
        file: PathBuf,
    },
    /// Print the changeId the active layer's changes count from
    Current {
        /// The disk
        file: PathBuf,
    },
    /// Print the areas changed since a changeId ("*" = allocated areas)
    Changed {
        /// The changeId to compare with
        #[arg(long)]
        since: String,
        /// Compare with this snapshot instead of the current disk
        #[arg(long)]
        snapshot: Option<String>,
        /// Start of the range to report
        #[arg(long, default_value = "0")]
        start: String,
        /// Length of the range to report (default: to the end of the disk)
        #[arg(long)]
        length: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// The disk
        file: PathBuf,
    },
}

/// What a failed command reports before exiting.
enum Failure {
    Error(String),
    Mismatch(String),
    Corrupt(String),
    Leaks(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(msg)) => {
            eprintln!("vdisk: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Mismatch(msg)) => {
            eprintln!("vdisk: {msg}");
            ExitCode::from(3)
        }
        Err(Failure::Corrupt(msg)) => {
            eprintln!("vdisk: {msg}");
            ExitCode::from(4)
        }
        Err(Failure::Leaks(msg)) => {
            eprintln!("vdisk: {msg}");
            ExitCode::from(5)
        }
    }
}

/// Parses a byte count with an optional binary suffix (K, M, G, T).
fn parse_size(text: &str) -> Result<u64, Failure> {
    let t = text.trim();
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| Failure::Error(format!("invalid size {text:?}")))
}

fn parse_byte(text: &str) -> Result<u8, Failure> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| Failure::Error(format!("invalid pattern byte {text:?}")))
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Create {
            backing,
            cluster_size,
            file,
            size,
        } => cmd_create(&file, backing, &cluster_size, size.as_deref()),
        Command::Info { json, file } => cmd_info(&file, json),
        Command::Map { json, file } => cmd_map(&file, json),
        Command::Check { repair, file } => cmd_check(&file, repair),
        Command::Write {
            file,
            offset,
            length,
            pattern,
        } => {
            let mut disk = open_disk(&file, false)?;
            let (offset, len) = (parse_size(&offset)?, parse_size(&length)?);
            let byte = parse_byte(&pattern)?;
            for_chunks(offset, len, |at, n| disk.write_at(&vec![byte; n], at))?;
            disk.flush()?;
            Ok(())
        }
        Command::Read {
            file,
            offset,
            length,
            pattern,
        } => cmd_read(
            &file,
            parse_size(&offset)?,
            parse_size(&length)?,
            parse_byte(&pattern)?,
        ),
        Command::Snapshot { file, new } => {
            let size = open_disk(&file, true)?.capacity();
            let name = relative_name(&new, &file);
            let mut options = CreateOptions::new(size);
            options.backing = Some(BackingSpec {
                name,
                format: probe_format(&file)?,
            });
            create(&new, &options)?;
            Ok(())
        }
        Command::Commit {
            keep,
            progress,
            file,
        } => {
            let done = commit(&file, !keep, &mut progress_bar("commit", progress))?;
            finish_progress(progress);
            println!("committed {done} bytes");
            Ok(())
        }
        Command::Rebase {
            backing,
            progress,
            file,
        } => {
            let spec = if backing.is_empty() {
                None
            } else {
                let path = vireo_disk::qcow2::resolve_backing(&file, &backing);
                Some(BackingSpec {
                    name: backing,
                    format: probe_format(&path)?,
                })
            };
            let done = rebase(&file, spec.as_ref(), &mut progress_bar("rebase", progress))?;
            finish_progress(progress);
            println!("copied {done} bytes");
            Ok(())
        }
        Command::Convert {
            format,
            progress,
            src,
            dst,
        } => cmd_convert(&src, &dst, &format, progress),
        Command::Import { progress, src, dst } => cmd_import(&src, &dst, progress),
        Command::Cbt { action } => cmd_cbt(action),
        Command::Bench {
            write,
            size,
            count,
            depth,
            offset,
            step,
            random,
            flush,
            pattern,
            file,
        } => {
            let size = parse_size(&size)?;
            let plan = BenchPlan {
                write,
                size,
                count,
                depth,
                offset: parse_size(&offset)?,
                step: step.as_deref().map(parse_size).transpose()?.unwrap_or(size),
                random,
                flush,
                pattern: parse_byte(&pattern)?,
            };
            cmd_bench(&file, &plan)
        }
    }
}

fn cmd_cbt(action: CbtAction) -> Result<(), Failure> {
    match action {
        CbtAction::Enable { file } => println!("{}", DiskTree::open(&file)?.enable_tracking()?),
        CbtAction::Disable { file } => DiskTree::open(&file)?.disable_tracking()?,
        CbtAction::Current { file } => println!("{}", DiskTree::open(&file)?.current_change_id()?),
        CbtAction::Changed {
            since,
            snapshot,
            start,
            length,
            json: as_json,
            file,
        } => {
            let mut tree = DiskTree::open(&file)?;
            let start = parse_size(&start)?;
            let length = length
                .as_deref()
                .map(parse_size)
                .transpose()?
                .unwrap_or(u64::MAX - start);
            let extents = tree.changed_areas(&since, snapshot.as_deref(), start, length)?;
            if as_json {
                let list: Vec<_> = extents
                    .iter()
                    .map(|&(o, l)| json!({"start": o, "length": l}))
                    .collect();
                println!("{}", serde_json::to_string(&list)?);
            } else {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for (o, l) in extents {
                    writeln!(out, "{o} {l}")?;
                }
                out.flush()?;
            }
        }
    }
    Ok(())
}

/// The name under which `new` should refer to `backing`: relative when they share a folder.
fn relative_name(new: &Path, backing: &Path) -> String {
    let same_dir = new.parent().map(absolute) == backing.parent().map(absolute);
    match backing.file_name() {
        Some(name) if same_dir => name.to_string_lossy().into_owned(),
        _ => absolute(backing).to_string_lossy().into_owned(),
    }
}

fn absolute(p: &Path) -> PathBuf {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Calls `f(offset, len)` for 1 MiB pieces of a range.
fn for_chunks<E>(
    offset: u64,
    len: u64,
    mut f: impl FnMut(u64, usize) -> Result<(), E>,
) -> Result<(), E> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(1 << 20);
        f(offset + done, n as usize)?;
        done += n;
    }
    Ok(())
}

fn cmd_create(
    file: &Path,
    backing: Option<String>,
    cluster_size: &str,
    size: Option<&str>,
) -> Result<(), Failure> {
    let cluster_size = parse_size(cluster_size)?;
    if !cluster_size.is_power_of_two() || !(4096..=2 << 20).contains(&cluster_size) {
        return Err(Failure::Error(format!(
            "cluster size {cluster_size} must be a power of two between 4K and 2M"
        )));
    }
    let backing = match backing {
        Some(name) => {
            let path = vireo_disk::qcow2::resolve_backing(file, &name);
            let format = probe_format(&path)?;
            let size = open_disk(&path, true)?.capacity();
            Some((BackingSpec { name, format }, size))
        }
        None => None,
    };
    let size = match (size, &backing) {
        (Some(s), _) => parse_size(s)?,
        (None, Some((_, backing_size))) => *backing_size,
        (None, None) => {
            return Err(Failure::Error(
                "a size is needed without a backing file".into(),
            ))
        }
    };
    let mut options = CreateOptions::new(size);
    options.cluster_bits = cluster_size.trailing_zeros();
    options.backing = backing.map(|(spec, _)| spec);
    create(file, &options)?;
    Ok(())
}

fn cmd_info(file: &Path, as_json: bool) -> Result<(), Failure> {
    let format = probe_format(file)?;
    let file_size = std::fs::metadata(file)?.len();
    let mut info = json!({
        "filename": file.display().to_string(),
        "format": format_name(format),
        "file-size": file_size,
    });
    if format == ImageFormat::Raw {
        info["virtual-size"] = json!(file_size);
    } else {
        let options = Qcow2Options {
            read_only: true,
            ..Qcow2Options::default()
        };
        let image = Qcow2Image::open(file, &options)?;
        let h = image.header();
        info["virtual-size"] = json!(h.size);
        info["version"] = json!(h.version);
        info["cluster-size"] = json!(h.cluster_size());
        info["refcount-bits"] = json!(1u32 << h.refcount_order);
        info["dirty"] = json!(h.incompatible & 1 != 0);
        info["corrupt"] = json!(h.incompatible & 2 != 0);
        info["internal-snapshots"] = json!(h.nb_snapshots);
        if let Some(b) = &h.backing_file {
            info["backing-filename"] = json!(b);
            info["backing-format"] = json!(h.backing_format());
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else if let Some(map) = info.as_object() {
        for (key, value) in map {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            println!("{key}: {text}");
        }
    }
    Ok(())
}

fn cmd_check(file: &Path, repair: bool) -> Result<(), Failure> {
    let report = vireo_disk::qcow2::check::check(file, repair)?;
    for corruption in &report.corruptions {
        println!("ERROR {corruption}");
    }
    println!(
        "{} clusters referenced, {} leaked, {} corruptions, {} refcounts repaired",
        report.referenced_clusters,
        report.leaked_clusters,
        report.corruptions.len(),
        report.repaired
    );
    if !report.corruptions.is_empty() {
        Err(Failure::Corrupt(format!("{} is corrupt", file.display())))
    } else if report.leaked_clusters > 0 {
        Err(Failure::Leaks(format!(
            "{} has leaked clusters",
            file.display()
        )))
    } else {
        Ok(())
    }
}

fn cmd_map(file: &Path, as_json: bool) -> Result<(), Failure> {
    let options = Qcow2Options {
        read_only: true,
        ..Qcow2Options::default()
    };
    let mut image = Qcow2Image::open(file, &options)?;
    let extents = image.layer_extents()?;
    let kind = |k: ExtentKind| match k {
        ExtentKind::Data => "data",
        ExtentKind::Zero => "zero",
        ExtentKind::Unallocated => "backing",
    };
    if as_json {
        let list: Vec<_> = extents
            .iter()
            .map(|e| json!({"start": e.offset, "length": e.len, "kind": kind(e.kind)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!("{:<20} {:<20} kind", "offset", "length");
        for e in extents {
            println!("{:<#20x} {:<#20x} {}", e.offset, e.len, kind(e.kind));
        }
    }
    Ok(())
}

fn cmd_read(file: &Path, offset: u64, len: u64, byte: u8) -> Result<(), Failure> {
    let mut disk = open_disk(file, true)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut mismatch = None;
    for_chunks(offset, len, |at, n| {
        disk.read_at(&mut buf[..n], at)?;
        if mismatch.is_none() {
            mismatch = buf[..n]
                .iter()
                .position(|&b| b != byte)
                .map(|i| at + i as u64);
        }
        Ok::<_, Failure>(())
    })?;
    match mismatch {
        Some(at) => Err(Failure::Mismatch(format!(
            "pattern {byte:#04x} verification failed at offset {at}"
        ))),
        None => {
            println!("read {len} bytes at {offset}: pattern {byte:#04x} verified");
            Ok(())
        }
    }
}

/// The target of `-O FORMAT[,subformat=S]`.
fn parse_target(spec: &str) -> Result<TargetFormat, Failure> {
    let (format, options) = spec.split_once(',').unwrap_or((spec, ""));
    let subformat = match options {
        "" => None,
        o => Some(o.strip_prefix("subformat=").ok_or_else(|| {
            Failure::Error(format!("unknown output option {o:?} (subformat= only)"))
        })?),
    };
    match (format, subformat) {
        ("qcow2", None) => Ok(TargetFormat::Qcow2),
        ("raw", None) => Ok(TargetFormat::Raw),
        ("vmdk", None | Some("monolithicSparse")) => Ok(TargetFormat::VmdkSparse),
        ("vmdk", Some("streamOptimized")) => Ok(TargetFormat::VmdkStream),
        _ => Err(Failure::Error(format!(
            "unsupported output format {spec:?}"
        ))),
    }
}

fn cmd_convert(src: &Path, dst: &Path, format: &str, progress: bool) -> Result<(), Failure> {
    let target = parse_target(format)?;
    let mut source = open_source(src)?;
    let mut bar = progress_bar("convert", progress);
    if dst == Path::new("-") {
        if target != TargetFormat::VmdkStream {
            return Err(Failure::Error(
                "only a streamOptimized VMDK can be written to standard output".into(),
            ));
        }
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let name = src.with_extension("vmdk");
        let name = name.file_name().unwrap_or_default().to_string_lossy();
        write_stream_optimized(&mut source, &name, out, &mut bar)?;
        finish_progress(progress);
        return Ok(());
    }
    let len = convert(&mut source, dst, target, &mut bar)?;
    finish_progress(progress);
    eprintln!("wrote {len} bytes to {}", dst.display());
    Ok(())
}

fn cmd_import(src: &Path, dst: &Path, progress: bool) -> Result<(), Failure> {
    let mut bar = progress_bar("import", progress);
    let summary = if src == Path::new("-") {
        import_vmdk_stream(std::io::stdin().lock(), dst, &mut bar)?
    } else {
        let file = std::fs::File::open(src)
            .map_err(|e| Failure::Error(format!("cannot open {}: {e}", src.display())))?;
        import_vmdk_stream(
            std::io::BufReader::with_capacity(1 << 20, file),
            dst,
            &mut bar,
        )?
    };
    finish_progress(progress);
    eprintln!(
        "imported {} bytes of VMDK into a {}-byte disk {}",
        summary.bytes_read,
        summary.capacity,
        dst.display()
    );
    Ok(())
}

/// A progress reporter for long operations: a bar on stderr when `show`.
fn progress_bar(what: &'static str, show: bool) -> impl FnMut(u64, u64) -> bool {
    let mut last = u64::MAX;
    move |done, total| {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        if show && percent != last {
            last = percent;
            let filled = (percent / 5) as usize;
            eprint!(
                "\r{what} [{}{}] {percent:3}%",
                "#".repeat(filled),
                " ".repeat(20 - filled)
            );
            let _ = std::io::stderr().flush();
        }
        true
    }
}

fn finish_progress(shown: bool) {
    if shown {
        eprintln!();
    }
}

/// What `vdisk bench` does.
struct BenchPlan {
    write: bool,
    size: u64,
    count: u64,
    depth: u16,
    offset: u64,
    step: u64,
    random: bool,
    flush: bool,
    pattern: u8,
}

impl BenchPlan {
    /// The offset of request `i`: steps wrap modulo the disk size like `qemu-img bench`
    /// (restarting at 0 where a request would cross the end); random offsets are aligned.
    fn offset_of(&self, i: u64, capacity: u64) -> u64 {
        let offset = if self.random {
            (splitmix64(i) % (capacity / self.size)) * self.size
        } else {
            ((self.offset as u128 + i as u128 * self.step as u128) % capacity as u128) as u64
        };
        if offset + self.size > capacity {
            0
        } else {
            offset
        }
    }
}

/// A well-mixed hash of `i` (SplitMix64), for reproducible random offsets.
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn cmd_bench(file: &Path, plan: &BenchPlan) -> Result<(), Failure> {
    let disk = SharedDisk::open(file, !plan.write)?;
    let capacity = disk.capacity();
    if plan.size == 0 || plan.size > capacity {
        return Err(Failure::Error(
            "request size must be between 1 and the disk size".into(),
        ));
    }
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.depth)
            .map(|_| scope.spawn(|| bench_worker(&disk, plan, &next)))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("bench worker panicked"))
    })?;
    if plan.flush {
        disk.flush()?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} {} requests of {} bytes, {} in flight, in {secs:.3} s: {:.0} IOPS, {:.1} MiB/s",
        if plan.write { "wrote" } else { "read" },
        plan.count,
        plan.size,
        plan.depth,
        plan.count as f64 / secs,
        (plan.count * plan.size) as f64 / secs / (1 << 20) as f64
    );
    Ok(())
}

/// Issues requests until `next` passes the plan's count: one request in flight per worker.
fn bench_worker(disk: &SharedDisk, plan: &BenchPlan, next: &AtomicU64) -> Result<(), BlockError> {
    let mut buf = vec![plan.pattern; plan.size as usize];
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.count {
            return Ok(());
        }
        let offset = plan.offset_of(i, disk.capacity());
        if plan.write {
            disk.write_at(&buf, offset)?;
        } else {
            disk.read_at(&mut buf, offset)?;
        }
    }
}
