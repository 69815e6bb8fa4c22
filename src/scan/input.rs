//! Opening `scan`'s inputs and reading them line by line as bytes.
//!
//! Files (or stdin for `-` / no file) are opened before anything is scanned, so a missing
//! or unreadable file is an argument error (exit 2) and not a failure half-way. gzip input
//! is recognised by its magic bytes, not its name, and may have several members
//! (`cat a.gz b.gz`). Lines are bytes: a log may hold binary garbage or invalid UTF-8, and
//! such lines are skipped by the parsers, never fatal.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::bufread::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};

/// Read buffer size: large enough that refills are rare against the per-line cost.
const BUF_BYTES: usize = 128 * 1024;

/// One input stream and the name used in error messages.
///
/// Why: `run` reads any `BufRead` (tests feed in-memory text), and a read error half-way
/// must still say which file failed.
pub(crate) struct Input {
    /// The file name, or `-` for stdin.
    pub name: String,
    /// The decoded stream (`Send`: `--threads` reads it on a thread of its own).
    pub reader: Box<dyn BufRead + Send>,
    /// Opens the same input again from its start (files, not stdin): the sharded
    /// `--threads` scan needs it in the rare case it must start over with one engine.
    pub reopen: Option<Reopen>,
}

/// Opens an input again from its start.
pub(crate) type Reopen = Arc<dyn Fn() -> io::Result<Input> + Send + Sync>;

impl Input {
    /// Wraps an already decoded stream.
    pub(crate) fn new(name: impl Into<String>, reader: Box<dyn BufRead + Send>) -> Input {
        Input {
            name: name.into(),
            reader,
            reopen: None,
        }
    }

    /// The same input, which `reopen` opens again from its start.
    pub(crate) fn reopenable(self, reopen: Reopen) -> Input {
        Input {
            reopen: Some(reopen),
            ..self
        }
    }

    /// Wraps a raw stream, decompressing it when it starts with the gzip or the zstd magic
    /// bytes.
    /// Reads the first buffer to look, so errors here mean the input cannot be read.
    pub(crate) fn sniffed(name: impl Into<String>, raw: Box<dyn Read + Send>) -> io::Result<Input> {
        let mut buffered = BufReader::with_capacity(BUF_BYTES, raw);
        let head = buffered.fill_buf()?;
        let reader: Box<dyn BufRead + Send> = if head.starts_with(&[0x1f, 0x8b]) {
            let decoder = GzMembers::new(buffered);
            Box::new(BufReader::with_capacity(BUF_BYTES, decoder))
        } else if head.starts_with(&ZSTD_MAGIC) {
            // zstd frames one after the other (`cat a.zst b.zst`), as `zstd -d` reads them
            // (journald's and logrotate's `compresscmd zstd` files).
            let decoder = zstd::stream::read::Decoder::with_buffer(buffered)?;
            Box::new(BufReader::with_capacity(BUF_BYTES, decoder))
        } else {
            Box::new(buffered)
        };
        Ok(Input::new(name, reader))
    }
}

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// gzip members one after the other (`cat a.gz b.gz`), as `gzip -d` reads them: zero bytes
/// after the last member (the padding of tape archives and some log shippers) end the input
/// quietly, while anything else after a member that is not another member is an error.
struct GzMembers<R: BufRead> {
    /// The member being read, or the input between two members.
    at: Option<GzDecoder<R>>,
    between: Option<R>,
}

impl<R: BufRead> GzMembers<R> {
    fn new(input: R) -> Self {
        GzMembers {
            at: Some(GzDecoder::new(input)),
            between: None,
        }
    }
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(member) = self.at.as_mut() {
                let n = member.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.between = self.at.take().map(GzDecoder::into_inner);
            }
            let Some(input) = self.between.as_mut() else {
                return Ok(0);
            };
            // After a member: the end, another member, or padding.
            let rest = input.fill_buf()?;
            if rest.is_empty() {
                self.between = None;
                return Ok(0);
            }
            if rest.starts_with(&[0x1f, 0x8b]) {
                self.at = self.between.take().map(GzDecoder::new);
                continue;
            }
            match rest.iter().position(|&b| b != 0) {
                None => {
                    let n = rest.len();
                    input.consume(n);
                }
                Some(_) => return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bytes after the gzip data that are neither another member nor zero padding",
                )),
            }
        }
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").field("name", &self.name).finish()
    }
}

/// An input that could not be opened or read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct OpenError {
    /// The file as given.
    pub path: String,
    /// The operating system's reason.
    #[source]
    pub source: io::Error,
}

/// Opens the command-line inputs (none or `-` = stdin), with a progress bar on stderr when
/// stderr is a terminal and every input is a regular file. Returns the inputs and the bar
/// (to clear before the summary is printed).
pub(crate) fn open_inputs(
    files: &[PathBuf],
) -> Result<(Vec<Input>, Option<ProgressBar>), OpenError> {
    if files.is_empty() {
        return Ok((vec![open_stdin()?], None));
    }
    let mut opened = Vec::with_capacity(files.len());
    let mut total: Option<u64> = Some(0);
    for path in files {
        if path.as_os_str() == "-" {
            total = None;
            opened.push((path.clone(), None));
            continue;
        }
        let file = File::open(path).map_err(|e| open_error(path, e))?;
        let meta = file.metadata().map_err(|e| open_error(path, e))?;
        total = total.filter(|_| meta.is_file()).map(|t| t + meta.len());
        opened.push((path.clone(), Some(file)));
    }
    let bar = total
        .filter(|_| io::stderr().is_terminal())
        .map(progress_bar);
    let mut inputs = Vec::with_capacity(opened.len());
    for (path, file) in opened {
        let input = match file {
            None => open_stdin()?,
            Some(file) => {
                let raw: Box<dyn Read + Send> = match &bar {
                    Some(bar) => Box::new(bar.wrap_read(file)),
                    None => Box::new(file),
                };
                let name = path.display().to_string();
                let again = path.clone();
                let reopen: Reopen = Arc::new(move || {
                    Input::sniffed(again.display().to_string(), Box::new(File::open(&again)?))
                });
                Input::sniffed(name, raw)
                    .map_err(|e| open_error(&path, e))?
                    .reopenable(reopen)
            }
        };
        inputs.push(input);
    }
    Ok((inputs, bar))
}

fn open_stdin() -> Result<Input, OpenError> {
    Input::sniffed("-", Box::new(io::stdin())).map_err(|e| open_error(Path::new("-"), e))
}

fn open_error(path: &Path, source: io::Error) -> OpenError {
    OpenError {
        path: path.display().to_string(),
        source,
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = "{spinner} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// What kind of line [`LineSplitter::each`] hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// A whole line, with its `\n` if it had one.
    Text,
    /// A line longer than the limit; only its first bytes are handed over.
    TooLong,
}

/// Splits a stream into lines without copying them: lines that lie inside the reader's
/// buffer are handed over in place; only a line that straddles two buffer fills is copied,
/// and never more than the limit of it.
///
/// Why not `read_until`: it copies every line, and a binary file without newlines would be
/// read whole into memory; this bounds memory and is the cheapest way through the bytes.
#[derive(Debug)]
pub(super) struct LineSplitter {
    max: usize,
    /// The start of a line that continues in the next buffer fill.
    partial: Vec<u8>,
    /// Whether bytes of the partial line beyond `max` were dropped.
    overflow: bool,
}

impl LineSplitter {
    /// Lines longer than `max` bytes (line ending excluded) are [`Line::TooLong`].
    pub(super) fn new(max: usize) -> LineSplitter {
        LineSplitter {
            max: max.max(1),
            partial: Vec::new(),
            overflow: false,
        }
    }

    /// Calls `f` for every line of `reader`, in order, until end of input.
    pub(super) fn each(
        &mut self,
        reader: &mut dyn BufRead,
        mut f: impl FnMut(Line, &[u8]),
    ) -> io::Result<()> {
        self.each_until(reader, |kind, line| {
            f(kind, line);
            true
        })
        .map(|_| ())
    }

    /// Calls `f` for every line of `reader`, in order, until end of input (returns `true`) or
    /// until `f` returns `false` (returns `false`; the next call goes on with the next line).
    pub(super) fn each_until(
        &mut self,
        reader: &mut dyn BufRead,
        mut f: impl FnMut(Line, &[u8]) -> bool,
    ) -> io::Result<bool> {
        loop {
            let buf = match reader.fill_buf() {
                Ok(buf) => buf,
                // A signal cut the read short: read again (as the batched reader does).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            let len = buf.len();
            let mut start = 0;
            if !self.partial.is_empty() || self.overflow {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    self.keep(buf);
                    reader.consume(len);
                    continue;
                };
                self.keep(&buf[..=nl]);
                let more = self.flush(&mut f);
                start = nl + 1;
                if !more {
                    reader.consume(start);
                    return Ok(false);
                }
            }
            while let Some(off) = memchr::memchr(b'\n', &buf[start..]) {
                let line = &buf[start..=start + off];
                let more = if off > self.max {
                    f(Line::TooLong, &line[..self.max])
                } else {
                    f(Line::Text, line)
                };
                start += off + 1;
                if !more {
                    reader.consume(start);
                    return Ok(false);
                }
            }
            self.keep(&buf[start..]);
            reader.consume(len);
        }
        if !self.partial.is_empty() || self.overflow {
            self.flush(&mut f);
        }
        Ok(true)
    }

    /// Appends to the partial line, up to the limit (plus room for its `\n`).
    fn keep(&mut self, bytes: &[u8]) {
        let room = (self.max + 1).saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.overflow = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn flush(&mut self, f: &mut impl FnMut(Line, &[u8]) -> bool) -> bool {
        let body = self.partial.len() - usize::from(self.partial.last() == Some(&b'\n'));
        let more = if self.overflow || body > self.max {
            f(Line::TooLong, &self.partial[..body.min(self.max)])
        } else {
            f(Line::Text, &self.partial)
        };
        self.partial.clear();
        self.overflow = false;
        more
    }
}
