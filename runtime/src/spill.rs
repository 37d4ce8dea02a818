//! Per-visitor buffers for what a channel delivers faster than its visitor reads: in memory up to
//! a small bound, then in an unlinked temporary file (`O_TMPFILE` where the kernel has it, so a
//! crash leaves nothing behind), within the caps the core decides ([`SpillLimits::place`]).
//!
//! The writer is the channel's drain task and never waits; the reader is the visitor's side. File
//! reads and writes are plain `pread`/`pwrite` on the page cache under a short lock, as a reverse
//! proxy's event loop does without aio: the alternative, a thread hop per chunk, costs more than
//! the copy.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tunnel_core::{SpillCut, SpillLimits, SpillPlace};

/// Every spill buffer of one server: the caps, the directory, the bytes on disk, and who holds
/// the most of them (the one cut when the server's cap is reached).
#[derive(Debug)]
pub struct Spills {
    limits: SpillLimits,
    dir: PathBuf,
    on_disk: AtomicU64,
    next_id: AtomicU64,
    buffers: Mutex<BTreeMap<u64, Weak<Shared>>>,
}

impl Spills {
    /// Spill files go under `dir`, which must exist.
    pub fn new(limits: SpillLimits, dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            limits,
            dir,
            on_disk: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            buffers: Mutex::new(BTreeMap::new()),
        })
    }

    /// Bytes all visitors have waiting on disk.
    pub fn on_disk(&self) -> u64 {
        self.on_disk.load(Ordering::Relaxed)
    }

    /// Buffers alive that have spilled to disk at some point (for leak checks).
    pub fn buffers(&self) -> usize {
        lock(&self.buffers).len()
    }

    /// A new buffer: the writer half for the drain task, the reader half for the visitor's side.
    pub fn buffer(self: &Arc<Self>) -> (SpillWriter, SpillReader) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            id,
            spills: Arc::clone(self),
            state: Mutex::new(State::default()),
        });
        (
            SpillWriter {
                shared: Arc::clone(&shared),
            },
            SpillReader { shared },
        )
    }

    /// Cuts the buffer with the most bytes on disk; true if one was cut.
    fn cut_largest(&self, why: SpillCut) -> bool {
        // Upgraded outside the registry's lock: dropping the last handle of a buffer takes it.
        let all: Vec<Weak<Shared>> = lock(&self.buffers).values().cloned().collect();
        let largest = all
            .iter()
            .filter_map(Weak::upgrade)
            .max_by_key(|b| lock(&b.state).in_file());
        match largest {
            Some(buffer) if lock(&buffer.state).in_file() > 0 => {
                buffer.cut(why);
                true
            }
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Shared {
    id: u64,
    spills: Arc<Spills>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    memory: VecDeque<Bytes>,
    in_memory: u64,
    file: Option<File>,
    /// Bytes of the file already read, and written: what waits there is the difference.
    file_read: u64,
    file_written: u64,
    /// The channel sent EOF or closed: once drained, the reader sees the end.
    finished: bool,
    cut: Option<SpillCut>,
    reader_gone: bool,
    reader: Option<Waker>,
    /// In the registry of spillers.
    registered: bool,
}

impl State {
    fn in_file(&self) -> u64 {
        self.file_written - self.file_read
    }

    fn wake(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }
}

impl Shared {
    fn cut(&self, why: SpillCut) {
        let mut state = lock(&self.state);
        if state.cut.is_none() {
            tracing::warn!("{why}");
            state.cut = Some(why);
        }
        self.release_file(&mut state);
        state.wake();
    }

    /// Gives the file's bytes back to the server's count and drops the file.
    fn release_file(&self, state: &mut State) {
        self.spills
            .on_disk
            .fetch_sub(state.in_file(), Ordering::Relaxed);
        state.file = None;
        state.file_read = 0;
        state.file_written = 0;
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let waiting = state.file_written - state.file_read;
        self.spills.on_disk.fetch_sub(waiting, Ordering::Relaxed);
        if state.registered {
            lock(&self.spills.buffers).remove(&self.id);
        }
    }
}

/// Why the drain task should stop taking data.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The visitor's side is gone.
    ReaderGone,
    /// The visitor was cut.
    Cut,
}

/// The drain task's half: takes what the channel delivers, never waiting.
#[derive(Debug)]
pub struct SpillWriter {
    shared: Arc<Shared>,
}

impl SpillWriter {
    /// Keeps `data` for the reader, in memory or on disk, or says why not.
    pub fn push(&self, data: Bytes) -> Result<(), Stop> {
        let incoming = data.len() as u64;
        let spills = &self.shared.spills;
        for attempt in 0..2 {
            let mut state = lock(&self.shared.state);
            if state.reader_gone {
                return Err(Stop::ReaderGone);
            }
            if state.cut.is_some() {
                return Err(Stop::Cut);
            }
            let place =
                spills
                    .limits
                    .place(state.in_memory, state.in_file(), spills.on_disk(), incoming);
            match place {
                SpillPlace::Memory => {
                    state.in_memory += incoming;
                    state.memory.push_back(data);
                    state.wake();
                    return Ok(());
                }
                SpillPlace::File => {
                    if let Err(error) = self.write_file(&mut state, &data) {
                        tracing::warn!(%error, dir = %spills.dir.display(), "spill file write failed");
                        drop(state);
                        self.shared.cut(SpillCut::Storage);
                        return Err(Stop::Cut);
                    }
                    state.wake();
                    return Ok(());
                }
                SpillPlace::Cut(why @ SpillCut::ServerCap(_)) if attempt == 0 => {
                    drop(state);
                    // The largest spiller goes; if that was not this one, try again.
                    if !spills.cut_largest(why) {
                        self.shared.cut(why);
                        return Err(Stop::Cut);
                    }
                }
                SpillPlace::Cut(why) => {
                    drop(state);
                    self.shared.cut(why);
                    return Err(Stop::Cut);
                }
                _ => {
                    drop(state);
                    self.shared
                        .cut(SpillCut::VisitorCap(spills.limits.file_per_visitor()));
                    return Err(Stop::Cut);
                }
            }
        }
        Err(Stop::Cut)
    }

    fn write_file(&self, state: &mut State, data: &[u8]) -> io::Result<()> {
        if state.file.is_none() {
            state.file = Some(tempfile::tempfile_in(&self.shared.spills.dir)?);
            // Only buffers with a file can be the largest spiller: the others never take the
            // registry's lock (one per visitor stream would serialise every accept on it).
            if !state.registered {
                state.registered = true;
                lock(&self.shared.spills.buffers)
                    .insert(self.shared.id, Arc::downgrade(&self.shared));
            }
        }
        let file = state.file.as_ref().expect("opened just above");
        file.write_all_at(data, state.file_written)?;
        state.file_written += data.len() as u64;
        self.shared
            .spills
            .on_disk
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The channel ended: the reader sees EOF once it has read everything.
    pub fn finish(&self) {
        let mut state = lock(&self.shared.state);
        state.finished = true;
        state.wake();
    }
}

impl Drop for SpillWriter {
    /// A drain task that ends for any reason ends the stream.
    fn drop(&mut self) {
        self.finish();
    }
}

/// The visitor's half: reads what waits, memory first, then the file, in order.
#[derive(Debug)]
pub struct SpillReader {
    shared: Arc<Shared>,
}

impl SpillReader {
    /// Bytes waiting for this reader, in memory and on disk.
    pub fn waiting(&self) -> (u64, u64) {
        let state = lock(&self.shared.state);
        (state.in_memory, state.in_file())
    }
}

impl AsyncRead for SpillReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        if let Some(why) = state.cut {
            return Poll::Ready(Err(io::Error::other(why.to_string())));
        }
        if let Some(front) = state.memory.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front.split_to(n));
            if front.is_empty() {
                state.memory.pop_front();
            }
            state.in_memory -= n as u64;
            return Poll::Ready(Ok(()));
        }
        if state.in_file() > 0 {
            let want = (state.in_file() as usize).min(buf.remaining());
            let file = state.file.as_ref().expect("bytes on disk have a file");
            let unfilled = &mut buf.initialize_unfilled()[..want];
            let n = match file.read_at(unfilled, state.file_read) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(error) => return Poll::Ready(Err(error)),
            };
            buf.advance(n);
            state.file_read += n as u64;
            shared.spills.on_disk.fetch_sub(n as u64, Ordering::Relaxed);
            if state.in_file() == 0 {
                // Drained: the disk space goes back at once, the next spill starts at 0.
                if let Some(file) = &state.file {
                    let _ = file.set_len(0);
                }
                state.file_read = 0;
                state.file_written = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if state.finished {
            return Poll::Ready(Ok(()));
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SpillReader {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.reader_gone = true;
        state.memory.clear();
        state.in_memory = 0;
        self.shared.release_file(&mut state);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; a poisoned one is still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn spills(memory: u64, per_visitor: u64, total: u64) -> (tempfile::TempDir, Arc<Spills>) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let spills = Spills::new(
            SpillLimits::new(memory, per_visitor, total),
            dir.path().to_owned(),
        );
        (dir, spills)
    }

    fn chunk(seed: u8, len: usize) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| seed.wrapping_add(i as u8))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn bytes_come_back_in_order_through_memory_and_file() {
        let (_dir, spills) = spills(1000, 1 << 20, 1 << 20);
        let (writer, mut reader) = spills.buffer();
        let mut expected = Vec::new();
        for i in 0..50u8 {
            let data = chunk(i, 300 + usize::from(i));
            expected.extend_from_slice(&data);
            writer.push(data).expect("within the caps");
            // Read a little now and then, so memory and file interleave.
            if i % 7 == 0 {
                let mut some = vec![0; 500];
                let n = reader.read(&mut some).await.expect("readable");
                assert_eq!(&some[..n], &expected[..n]);
                expected.drain(..n);
            }
        }
        assert!(spills.on_disk() > 0, "most of it went to disk");
        writer.finish();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.expect("readable");
        assert_eq!(rest, expected);
        assert_eq!(spills.on_disk(), 0, "a drained file gives its bytes back");
    }

    #[tokio::test]
    async fn a_visitor_over_its_cap_is_cut_and_reads_an_error() {
        let (_dir, spills) = spills(100, 1000, 1 << 20);
        let (writer, mut reader) = spills.buffer();
        writer.push(chunk(0, 100)).expect("memory");
        writer.push(chunk(1, 900)).expect("file");
        assert_eq!(writer.push(chunk(2, 200)), Err(Stop::Cut));
        assert_eq!(spills.on_disk(), 0, "a cut visitor's file goes at once");
        let error = reader.read(&mut [0; 10]).await.expect_err("cut");
        assert!(
            error.to_string().contains("per-visitor cap of 1000"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn at_the_server_cap_the_largest_spiller_is_cut_and_the_others_go_on() {
        let (_dir, spills) = spills(10, 1000, 1500);
        let (big_writer, mut big) = spills.buffer();
        let (small_writer, mut small) = spills.buffer();
        big_writer.push(chunk(0, 10)).expect("memory");
        big_writer.push(chunk(1, 900)).expect("file");
        small_writer.push(chunk(2, 10)).expect("memory");
        small_writer.push(chunk(3, 500)).expect("file");
        // 1410 on disk; 200 more would pass 1500: the big one goes, the small one carries on.
        small_writer.push(chunk(4, 200)).expect("room made");
        assert_eq!(big_writer.push(chunk(5, 1)), Err(Stop::Cut));
        assert!(big.read(&mut [0; 10]).await.is_err());
        assert_eq!(spills.on_disk(), 700);
        small_writer.finish();
        let mut all = Vec::new();
        small.read_to_end(&mut all).await.expect("intact");
        assert_eq!(all.len(), 710);
        assert_eq!(spills.on_disk(), 0);
    }

    #[tokio::test]
    async fn a_reader_that_leaves_stops_the_writer_and_frees_everything() {
        let (dir, spills) = spills(10, 1000, 1000);
        let (writer, reader) = spills.buffer();
        writer.push(chunk(0, 500)).expect("file");
        drop(reader);
        assert_eq!(writer.push(chunk(1, 1)), Err(Stop::ReaderGone));
        assert_eq!(spills.on_disk(), 0);
        drop(writer);
        assert_eq!(spills.buffers(), 0);
        // The file was never linked into the directory.
        assert_eq!(std::fs::read_dir(dir.path()).expect("readable").count(), 0);
    }

    #[tokio::test]
    async fn a_spill_dir_that_cannot_be_written_cuts_the_visitor_saying_so() {
        let (dir, spills) = spills(10, 1000, 1000);
        std::fs::remove_dir(dir.path()).expect("remove the spill dir");
        let (writer, mut reader) = spills.buffer();
        assert_eq!(writer.push(chunk(0, 100)), Err(Stop::Cut));
        let error = reader.read(&mut [0; 10]).await.expect_err("cut");
        assert!(
            error.to_string().contains("could not be written"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_reader_waits_for_data_and_sees_the_end() {
        let (_dir, spills) = spills(1000, 1000, 1000);
        let (writer, mut reader) = spills.buffer();
        let read = tokio::spawn(async move {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).await.map(|_| all)
        });
        tokio::task::yield_now().await;
        writer.push(Bytes::from_static(b"hello")).expect("memory");
        drop(writer);
        assert_eq!(read.await.expect("joined").expect("read"), b"hello");
    }
}
