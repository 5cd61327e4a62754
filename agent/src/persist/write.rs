//! How journal bytes reach stable storage: direct, synchronous writes in whole aligned blocks
//! where the file system takes them, `pwrite` + `fdatasync` otherwise.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Alignment of direct writes: offset, length and buffer address. 4 KiB covers devices with
/// 512-byte and 4 KiB logical blocks; a file system that needs more refuses the write
/// (`EINVAL`) and the journal falls back to buffered writes.
pub(super) const ALIGN: usize = 4096;

/// How the journal is opened for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    /// `O_DIRECT | O_DSYNC` where the file system takes it, else buffered.
    Direct,
    /// `pwrite` + `fdatasync` through the page cache.
    Buffered,
}

/// Opens the journal for writing: direct and synchronous when asked and the file system takes
/// it, buffered otherwise. Returns whether it is direct.
pub(super) fn open_journal(path: &Path, mode: JournalMode) -> std::io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    if mode == JournalMode::Direct {
        match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT | libc::O_DSYNC).open(path) {
            Ok(f) => return Ok((f, true)),
            // EINVAL: the file system does not do direct I/O.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((OpenOptions::new().read(true).write(true).open(path)?, false))
}

/// The buffer direct writes are assembled in, its slices aligned to [`ALIGN`] as direct I/O
/// needs. It keeps the allocation of an ordinary write (a block or two) for the next one; a
/// larger one (a catch-up's group, a growth step) is given back after its write.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    bytes: Vec<u8>,
}

/// Largest scratch allocation kept between writes.
const SCRATCH_KEEP: usize = 64 << 10;

impl Scratch {
    /// An aligned slice of `len` bytes (a multiple of [`ALIGN`]) holding `parts` one after the
    /// other, then zeros. `None` when the allocator's address cannot be aligned (it always can
    /// in practice).
    pub(super) fn assemble(&mut self, len: usize, parts: &[&[u8]]) -> Option<&[u8]> {
        if self.bytes.len() < len + ALIGN {
            self.bytes = vec![0; len + ALIGN];
        }
        let start = self.bytes.as_ptr().align_offset(ALIGN);
        let b = self.bytes.get_mut(start..start + len)?;
        let mut at = 0;
        for p in parts {
            b.get_mut(at..at + p.len())?.copy_from_slice(p);
            at += p.len();
        }
        b.get_mut(at..)?.fill(0);
        self.bytes.get(start..start + len)
    }

    /// Gives a large allocation back.
    pub(super) fn trim(&mut self) {
        if self.bytes.len() > SCRATCH_KEEP + ALIGN {
            self.bytes = Vec::new();
        }
    }
}

/// Writes whole aligned blocks with a direct, synchronous handle. A short write is continued
/// from the last whole block it covered: those bytes are rewritten with the same content.
pub(super) fn write_direct(f: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut done = 0usize;
    while done < buf.len() {
        match f.write_at(&buf[done..], at + done as u64) {
            Ok(n) => {
                let next = (done + n) / ALIGN * ALIGN;
                if next == done {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "direct write wrote less than a block",
                    ));
                }
                done = next;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(super) fn align_down(n: u64) -> u64 {
    n / ALIGN as u64 * ALIGN as u64
}

pub(super) fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// Writes `buf` at `at` and flushes the data (not the metadata) to the disk.
pub(super) fn write_synced(f: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, at)?;
    f.sync_data()
}
