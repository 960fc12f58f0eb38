//! gzip on every core, with output that does not depend on how many there are.
//!
//! The input is cut into fixed-size blocks. Each block is deflated on its
//! own, primed with the last 32 KiB of the block before it as a dictionary
//! (as pigz does), and ends on a byte boundary with a sync flush; the last
//! one finishes the stream. The concatenation is one deflate stream, and
//! since blocks and dictionaries depend only on the data, the bytes are the
//! same with one thread or many. The header is fixed (no name, mtime 0).

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Size of the blocks compressed in parallel.
pub const BLOCK_SIZE: usize = 1 << 20;
const WINDOW: usize = 32 * 1024;
/// `gzip -6`, the usual trade of size for time.
pub const LEVEL: u32 = 6;
const HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];

struct Job {
    data: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
    result: SyncSender<Vec<u8>>,
}

pub struct ParallelGzip<W: Write + Send + 'static> {
    block: Vec<u8>,
    dictionary: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    jobs: Option<SyncSender<Job>>,
    order: Option<SyncSender<Receiver<Vec<u8>>>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParallelGzip<W> {
    /// Compresses into `out` with `threads` workers (at least one).
    pub fn new(mut out: W, threads: usize) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        let threads = threads.max(1);
        let (jobs, job_receiver) = sync_channel::<Job>(threads);
        let job_receiver = std::sync::Arc::new(std::sync::Mutex::new(job_receiver));
        let workers = (0..threads)
            .map(|_| {
                let job_receiver = job_receiver.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match job_receiver.lock().expect("a worker panicked").recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        let compressed = deflate_block(&job.data, &job.dictionary, job.last);
                        let _ = job.result.send(compressed);
                    }
                })
            })
            .collect();
        // The writer takes results in input order; the bound keeps the number
        // of blocks in flight (and so memory) small.
        let (order, order_receiver) = sync_channel::<Receiver<Vec<u8>>>(threads * 2);
        let writer = std::thread::spawn(move || -> io::Result<W> {
            for result in order_receiver {
                let compressed = result
                    .recv()
                    .map_err(|_| io::Error::other("a compression worker stopped"))?;
                out.write_all(&compressed)?;
            }
            Ok(out)
        });
        Ok(Self {
            block: Vec::with_capacity(BLOCK_SIZE),
            dictionary: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            jobs: Some(jobs),
            order: Some(order),
            workers,
            writer: Some(writer),
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(
            &mut self.block,
            Vec::with_capacity(if last { 0 } else { BLOCK_SIZE }),
        );
        let next_dictionary = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let dictionary = std::mem::replace(&mut self.dictionary, next_dictionary);
        let (result, receiver) = sync_channel(1);
        let stopped = || io::Error::other("the compression threads stopped");
        self.order
            .as_ref()
            .ok_or_else(stopped)?
            .send(receiver)
            .map_err(|_| stopped())?;
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(Job {
                data,
                dictionary,
                last,
                result,
            })
            .map_err(|_| stopped())
    }

    /// Ends the stream (last block, CRC and size) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.jobs.take();
        self.order.take();
        for worker in self.workers.drain(..) {
            worker
                .join()
                .map_err(|_| io::Error::other("a compression worker panicked"))?;
        }
        let mut out = self
            .writer
            .take()
            .expect("finish runs once")
            .join()
            .map_err(|_| io::Error::other("the gzip writer panicked"))??;
        out.write_all(&self.crc.clone().finalize().to_le_bytes())?;
        out.write_all(&(self.total as u32).to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.total += n as u64;
        if self.block.len() == BLOCK_SIZE {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Dropped without finish (an error upstream): let the threads end.
        self.jobs.take();
        self.order.take();
    }
}

/// Raw deflate of one block; ends with a sync flush, or finishes the stream.
fn deflate_block(data: &[u8], dictionary: &[u8], last: bool) -> Vec<u8> {
    let mut compress = Compress::new(Compression::new(LEVEL), false);
    if !dictionary.is_empty() {
        compress
            .set_dictionary(dictionary)
            .expect("a raw deflate stream takes a dictionary before input");
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .expect("deflating bytes in memory cannot fail");
        let all_in = compress.total_in() as usize == data.len();
        let room_left = out.len() < out.capacity();
        if (last && status == Status::StreamEnd) || (!last && all_in && room_left) {
            return out;
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if i % 7 < 4 {
                    b"kiln bakes images "[i % 18]
                } else {
                    state as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), threads).unwrap();
        for piece in data.chunks(chunk) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn output_is_standard_gzip_and_independent_of_threads() {
        for len in [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, 2 * BLOCK_SIZE + 12_345] {
            let data = sample(len);
            let one = gzip(&data, 1, 4096);
            let many = gzip(&data, 4, 100_000);
            assert_eq!(one, many, "thread count changed the bytes for {len}");
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(one.as_slice())
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, data, "round trip of {len} bytes");
        }
    }
}
