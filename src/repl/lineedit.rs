//! A small line editor for the REPL on a terminal.
//!
//! Why not a line-editing library: rustyline redraws the whole line each time
//! the cursor reaches the end of a terminal row, so a long line arriving as
//! keystrokes (a paste into a terminal without bracketed paste, `tmux
//! send-keys`) cost time quadratic in its length: 100 KB took 2 s, 200 KB 8 s,
//! 1 MB about 4 minutes. This editor reads whatever the terminal has ready
//! (up to 64 KiB at a time), applies all of it, and redraws once; and it
//! shows a window of the line that fits on one row (as redis-cli does), so a
//! redraw costs the width of the terminal, not the length of the line. Any
//! input therefore costs time linear in its length.
//!
//! Keys: printable text inserts; Enter accepts; Backspace, Delete, Left,
//! Right, Home, End, Up and Down (history) as usual; Ctrl-A/E/B/F/P/N move,
//! Ctrl-H deletes back, Ctrl-U/K/W cut to start/end/previous word, Ctrl-L
//! clears the screen, Ctrl-C abandons the line, Ctrl-D on an empty line ends
//! input. Each character counts as one column (wide characters shift the
//! display, not the text).
//!
//! The terminal is in raw mode only while a line is read; [`restore_terminal`]
//! puts it back from anywhere (a signal-handling thread), so a process killed
//! by a signal never leaves the terminal without echo.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Longest history entry kept (a pasted megabyte stays out of the history file).
const MAX_HISTORY_LINE: usize = 4096;
/// Entries kept in the history.
const MAX_HISTORY: usize = 1000;
/// Bytes read from the terminal at a time.
const READ_CHUNK: usize = 64 * 1024;
/// How long to wait for the rest of an escape sequence after a lone ESC.
const ESC_WAIT: Duration = Duration::from_millis(50);

/// The terminal settings from before raw mode, while raw mode is on.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Why [`Editor::readline`] returned no line.
#[derive(Debug)]
pub enum ReadError {
    /// Ctrl-C: the line was abandoned.
    Interrupted,
    /// Ctrl-D on an empty line, or the terminal closed.
    Eof,
    /// Reading or writing the terminal failed.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Puts the terminal back as it was before raw mode, if raw mode is on.
/// Safe to call from any thread, any number of times.
pub fn restore_terminal() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = saved {
        // SAFETY: tcsetattr on standard input with a termios read from it
        // by tcgetattr; no memory is shared with the kernel beyond the call.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
        }
        // Leave the cursor on a fresh line.
        let mut out = io::stdout();
        let _ = out.write_all(b"\r\n");
        let _ = out.flush();
    }
}

/// Raw mode for as long as it lives.
struct RawMode;

impl RawMode {
    fn enter() -> io::Result<RawMode> {
        // SAFETY: a zeroed termios is a valid value to be filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes into the termios we own.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = t;
        raw.c_iflag &= !(libc::BRKINT | libc::ICRNL | libc::INPCK | libc::ISTRIP | libc::IXON);
        raw.c_cflag |= libc::CS8;
        raw.c_lflag &= !(libc::ECHO | libc::ICANON | libc::IEXTEN | libc::ISIG);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        // SAFETY: as above, with a termios derived from the terminal's own.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            let e = io::Error::last_os_error();
            SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Err(e);
        }
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = saved {
            // SAFETY: see restore_terminal.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            }
        }
    }
}

/// Columns of the terminal on standard output (80 if unknown).
fn columns() -> usize {
    // SAFETY: a zeroed winsize is valid; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: ioctl TIOCGWINSZ writes a winsize into the struct we own.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// Reads what standard input has ready (blocking until something is).
fn read_some(buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: read(2) into a buffer we own, at most its length.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// True if standard input has bytes ready within `wait`.
fn input_ready(wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll(2) on one pollfd we own.
    unsafe { libc::poll(&mut fd, 1, ms) > 0 }
}

/// The line being edited.
#[derive(Debug, Default)]
struct Line {
    chars: Vec<char>,
    cursor: usize,
    /// First character shown (the window scrolls to keep the cursor visible).
    scroll: usize,
}

impl Line {
    fn set(&mut self, text: &str) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
    }

    fn text(&self) -> String {
        self.chars.iter().collect()
    }

    fn insert(&mut self, run: &[char]) {
        let at = self.cursor;
        self.chars.splice(at..at, run.iter().copied());
        self.cursor += run.len();
    }

    fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    fn word_start(&self) -> usize {
        let mut i = self.cursor;
        while i > 0 && self.chars[i - 1] == ' ' {
            i -= 1;
        }
        while i > 0 && self.chars[i - 1] != ' ' {
            i -= 1;
        }
        i
    }

    fn word_end(&self) -> usize {
        let mut i = self.cursor;
        while i < self.chars.len() && self.chars[i] == ' ' {
            i += 1;
        }
        while i < self.chars.len() && self.chars[i] != ' ' {
            i += 1;
        }
        i
    }

    /// What to write to show `prompt` and the window of the line around the
    /// cursor on the current row: `\r`, prompt, window, clear to end of row,
    /// cursor placed. Costs the width of the terminal, not the line length.
    fn render(&mut self, prompt: &str, cols: usize) -> String {
        let prompt_w = prompt.chars().count();
        let avail = cols.saturating_sub(prompt_w + 1).max(1);
        if self.cursor < self.scroll {
            self.scroll = self.cursor;
        }
        if self.cursor >= self.scroll + avail {
            self.scroll = self.cursor + 1 - avail;
        }
        self.scroll = self.scroll.min(self.chars.len());
        let end = (self.scroll + avail).min(self.chars.len());
        let mut out = String::with_capacity(cols * 4 + 16);
        out.push('\r');
        out.push_str(prompt);
        out.extend(
            self.chars[self.scroll..end]
                .iter()
                .map(|&c| if c.is_control() { '?' } else { c }),
        );
        out.push_str("\x1b[0K\r");
        let col = prompt_w + self.cursor - self.scroll;
        if col > 0 {
            out.push_str(&format!("\x1b[{col}C"));
        }
        out
    }
}

/// One decoded key (or a run of text).
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Text(Vec<char>),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    Up,
    Down,
    WordLeft,
    WordRight,
    CutToStart,
    CutToEnd,
    CutWord,
    Clear,
    Interrupt,
    CtrlD,
    Ignore,
}

/// Splits terminal bytes into keys, each with the offset just past its
/// bytes. Returns the keys and how many bytes were used; an incomplete UTF-8
/// character or escape sequence at the end is left for the next read (unless
/// `flush`, which drops a lone ESC). Stops after a key that may end the line
/// (Enter, Ctrl-C, Ctrl-D), so input typed ahead of a line is decoded once,
/// by the call that reads the line it belongs to.
fn decode(bytes: &[u8], flush: bool) -> (Vec<(Key, usize)>, usize) {
    let mut keys = Vec::new();
    let mut text: Vec<char> = Vec::new();
    let mut i = 0;
    // Ends the text run (if any) at `start`, then adds `k`, which ends at `end`.
    let push =
        |keys: &mut Vec<(Key, usize)>, text: &mut Vec<char>, start: usize, k: Key, end: usize| {
            if !text.is_empty() {
                keys.push((Key::Text(std::mem::take(text)), start));
            }
            keys.push((k, end));
        };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            0x1b => {
                let rest = &bytes[i + 1..];
                let Some(&kind) = rest.first() else {
                    if flush {
                        i += 1;
                        continue;
                    }
                    break;
                };
                if kind == b'[' || kind == b'O' {
                    // CSI/SS3: parameters then one final byte in 0x40..=0x7e.
                    let Some(fin) = rest[1..].iter().position(|c| (0x40..=0x7e).contains(c)) else {
                        if flush || rest.len() > 16 {
                            // Not a sequence after all: drop the ESC only.
                            i += 1;
                            continue;
                        }
                        break;
                    };
                    let seq = &rest[..fin + 2];
                    let key = match seq {
                        b"[A" | b"OA" => Key::Up,
                        b"[B" | b"OB" => Key::Down,
                        b"[C" | b"OC" => Key::Right,
                        b"[D" | b"OD" => Key::Left,
                        b"[H" | b"OH" | b"[1~" | b"[7~" => Key::Home,
                        b"[F" | b"OF" | b"[4~" | b"[8~" => Key::End,
                        b"[3~" => Key::Delete,
                        b"[1;5D" | b"[1;3D" => Key::WordLeft,
                        b"[1;5C" | b"[1;3C" => Key::WordRight,
                        _ => Key::Ignore, // bracketed-paste marks and the like
                    };
                    push(&mut keys, &mut text, i, key, i + 1 + seq.len());
                    i += 1 + seq.len();
                } else {
                    let key = match kind {
                        b'b' | b'B' => Key::WordLeft,
                        b'f' | b'F' => Key::WordRight,
                        _ => Key::Ignore,
                    };
                    push(&mut keys, &mut text, i, key, i + 2);
                    i += 2;
                }
            }
            b'\r' | b'\n' => {
                push(&mut keys, &mut text, i, Key::Enter, i + 1);
                i += 1;
                return (keys, i);
            }
            0x7f | 0x08 => {
                push(&mut keys, &mut text, i, Key::Backspace, i + 1);
                i += 1;
            }
            0x00..=0x1f => {
                let key = match b {
                    0x01 => Key::Home,
                    0x02 => Key::Left,
                    0x03 => Key::Interrupt,
                    0x04 => Key::CtrlD,
                    0x05 => Key::End,
                    0x06 => Key::Right,
                    0x0b => Key::CutToEnd,
                    0x0c => Key::Clear,
                    0x0e => Key::Down,
                    0x10 => Key::Up,
                    0x15 => Key::CutToStart,
                    0x17 => Key::CutWord,
                    0x09 => {
                        text.push(' ');
                        i += 1;
                        continue;
                    }
                    _ => Key::Ignore,
                };
                let ends_line = matches!(key, Key::Interrupt | Key::CtrlD);
                push(&mut keys, &mut text, i, key, i + 1);
                i += 1;
                if ends_line {
                    return (keys, i);
                }
            }
            _ => {
                // A UTF-8 character: its length from the lead byte.
                let len = match b {
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf7 => 4,
                    _ => 1,
                };
                if i + len > bytes.len() && !flush {
                    break;
                }
                let end = (i + len).min(bytes.len());
                match std::str::from_utf8(&bytes[i..end]) {
                    Ok(s) => text.extend(s.chars()),
                    Err(_) => text.push(char::REPLACEMENT_CHARACTER),
                }
                i = end;
            }
        }
    }
    if !text.is_empty() {
        keys.push((Key::Text(text), i));
    }
    (keys, i)
}

/// The editor: history, plus input read but not yet used (typed ahead of
/// the current line).
pub struct Editor {
    history: VecDeque<String>,
    history_file: Option<PathBuf>,
    /// Bytes read from the terminal; those before `pos` are used.
    pending: Vec<u8>,
    pos: usize,
}

impl Editor {
    /// An editor whose history lives in `history_file` (loaded now).
    pub fn new(history_file: Option<PathBuf>) -> Editor {
        let mut history = VecDeque::new();
        if let Some(text) = history_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
        {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                history.push_back(line.to_string());
            }
            while history.len() > MAX_HISTORY {
                history.pop_front();
            }
        }
        Editor {
            history,
            history_file,
            pending: Vec::new(),
            pos: 0,
        }
    }

    /// Adds a line to the history (short lines only; no repeats in a row).
    pub fn add_history(&mut self, line: &str) {
        if line.trim().is_empty()
            || line.len() > MAX_HISTORY_LINE
            || line.contains('\n')
            || self.history.back().is_some_and(|l| l == line)
        {
            return;
        }
        self.history.push_back(line.to_string());
        if self.history.len() > MAX_HISTORY {
            self.history.pop_front();
        }
    }

    /// Writes the history file.
    pub fn save_history(&self) {
        if let Some(f) = &self.history_file {
            let mut text = String::new();
            for l in &self.history {
                text.push_str(l);
                text.push('\n');
            }
            if let Err(e) = std::fs::write(f, text) {
                tracing::debug!(cause = %e, file = %f.display(), "cannot save the REPL history");
            }
        }
    }

    /// Reads one line from the terminal, showing `prompt`.
    pub fn readline(&mut self, prompt: &str) -> Result<String, ReadError> {
        let _raw = RawMode::enter()?;
        let mut out = io::stdout();
        let mut line = Line::default();
        // Position in the history while browsing with Up/Down; the line being
        // typed is kept aside meanwhile.
        let mut browsing: Option<(usize, String)> = None;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut cols = columns();
        out.write_all(line.render(prompt, cols).as_bytes())?;
        out.flush()?;
        loop {
            if !input_complete(&self.pending[self.pos..]) {
                let n = read_some(&mut buf)?;
                if n == 0 {
                    return Err(ReadError::Eof);
                }
                self.pending.extend_from_slice(&buf[..n]);
            }
            // A lone ESC at the end: wait a moment for the rest of the sequence.
            let flush = self.pending.last() == Some(&0x1b) && !input_ready(ESC_WAIT);
            let (keys, used) = decode(&self.pending[self.pos..], flush);
            let mut consumed = used;
            let mut done: Option<Result<String, ReadError>> = None;
            for (key, end) in keys {
                match key {
                    Key::Text(run) => line.insert(&run),
                    Key::Enter => done = Some(Ok(line.text())),
                    Key::Backspace => line.backspace(),
                    Key::Delete => line.delete(),
                    Key::Left => line.cursor = line.cursor.saturating_sub(1),
                    Key::Right => line.cursor = (line.cursor + 1).min(line.chars.len()),
                    Key::Home => line.cursor = 0,
                    Key::End => line.cursor = line.chars.len(),
                    Key::WordLeft => line.cursor = line.word_start(),
                    Key::WordRight => line.cursor = line.word_end(),
                    Key::CutToStart => {
                        line.chars.drain(..line.cursor);
                        line.cursor = 0;
                    }
                    Key::CutToEnd => line.chars.truncate(line.cursor),
                    Key::CutWord => {
                        let from = line.word_start();
                        line.chars.drain(from..line.cursor);
                        line.cursor = from;
                    }
                    Key::Clear => out.write_all(b"\x1b[H\x1b[2J")?,
                    Key::Interrupt => {
                        out.write_all(line.render(prompt, cols).as_bytes())?;
                        out.write_all(b"^C\r\n")?;
                        done = Some(Err(ReadError::Interrupted));
                    }
                    Key::CtrlD => {
                        if line.chars.is_empty() {
                            out.write_all(b"\r\n")?;
                            done = Some(Err(ReadError::Eof));
                        } else {
                            line.delete();
                        }
                    }
                    Key::Up | Key::Down => {
                        self.browse(&mut line, &mut browsing, key == Key::Up);
                    }
                    Key::Ignore => {}
                }
                if done.is_some() {
                    // The bytes after this key belong to the next line.
                    consumed = end;
                    break;
                }
            }
            self.consume(consumed);
            cols = columns();
            match done {
                Some(Ok(text)) => {
                    out.write_all(line.render(prompt, cols).as_bytes())?;
                    out.write_all(b"\r\n")?;
                    out.flush()?;
                    return Ok(text);
                }
                Some(Err(e)) => {
                    out.flush()?;
                    return Err(e);
                }
                None => {
                    // More input already waiting: apply it before redrawing.
                    if input_ready(Duration::ZERO) {
                        continue;
                    }
                    out.write_all(line.render(prompt, cols).as_bytes())?;
                    out.flush()?;
                }
            }
        }
    }

    /// Marks `n` more pending bytes used; drops used bytes once they are
    /// the larger part (so many lines typed ahead cost linear time).
    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
        } else if self.pos > READ_CHUNK && self.pos * 2 > self.pending.len() {
            self.pending.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn browse(&self, line: &mut Line, browsing: &mut Option<(usize, String)>, up: bool) {
        let len = self.history.len();
        let current = browsing.as_ref().map_or(len, |(i, _)| *i);
        let next = if up {
            current.checked_sub(1)
        } else if current < len {
            Some(current + 1)
        } else {
            None
        };
        let Some(next) = next else { return };
        if browsing.is_none() {
            *browsing = Some((len, line.text()));
        }
        if let Some((i, typed)) = browsing.as_mut() {
            *i = next;
            if next == len {
                let typed = std::mem::take(typed);
                line.set(&typed);
                *browsing = None;
            } else if let Some(h) = self.history.get(next) {
                line.set(h);
            }
        }
    }
}

/// True when `bytes` hold at least one complete key (so no read is needed
/// before decoding them). Looks at the first key only.
fn input_complete(bytes: &[u8]) -> bool {
    let Some(&b) = bytes.first() else {
        return false;
    };
    let len = match b {
        0x1b => return decode(&bytes[..bytes.len().min(32)], false).1 > 0,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    };
    bytes.len() >= len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> (Vec<Key>, usize) {
        let (keys, used) = decode(bytes, false);
        (keys.into_iter().map(|(k, _)| k).collect(), used)
    }

    #[test]
    fn decodes_text_keys_and_sequences() {
        let (k, used) = keys(b"ab\x1b[D\x7fc\r");
        assert_eq!(
            k,
            vec![
                Key::Text(vec!['a', 'b']),
                Key::Left,
                Key::Backspace,
                Key::Text(vec!['c']),
                Key::Enter
            ]
        );
        assert_eq!(used, 8);
        // An incomplete sequence or character waits for more input.
        assert_eq!(keys(b"a\x1b["), (vec![Key::Text(vec!['a'])], 1));
        assert_eq!(keys(&"é".as_bytes()[..1]), (vec![], 0));
        let (k, _) = keys("é\x1b[3~".as_bytes());
        assert_eq!(k, vec![Key::Text(vec!['é']), Key::Delete]);
        // A lone ESC is dropped only when no more input follows.
        assert_eq!(decode(b"\x1b", false).1, 0);
        assert_eq!(decode(b"\x1b", true).1, 1);
        // A broken sequence loses its ESC, not the input after it.
        let (k, _) = keys(b"\x1b[0123456789012345678 !");
        assert_eq!(
            k,
            vec![Key::Text("[0123456789012345678 !".chars().collect())]
        );
    }

    #[test]
    fn decoding_stops_at_the_end_of_a_line() {
        let input = "SET k é\r\x1b[AGET k\r".as_bytes();
        let (k, used) = decode(input, false);
        assert_eq!(k.len(), 2);
        assert_eq!(&input[used..], "\x1b[AGET k\r".as_bytes());
        let (k, _) = decode(&input[used..], false);
        assert_eq!(k[0], (Key::Up, 3));
        assert!(input_complete(b"x"));
        assert!(input_complete(b"\x1b[A"));
        assert!(!input_complete(b"\x1b["));
        assert!(!input_complete(&"é".as_bytes()[..1]));
        assert!(!input_complete(b""));
    }

    #[test]
    fn editing_and_rendering() {
        let mut l = Line::default();
        l.insert(&"hello world".chars().collect::<Vec<_>>());
        l.cursor = l.word_start();
        assert_eq!(l.cursor, 6);
        l.backspace();
        assert_eq!(l.text(), "helloworld");
        // The window keeps the cursor visible and costs the width, not the length.
        let mut long = Line::default();
        long.insert(&vec!['x'; 100_000]);
        let shown = long.render("db> ", 80);
        assert!(shown.len() < 120, "{}", shown.len());
        long.cursor = 0;
        assert!(long.render("db> ", 80).starts_with("\rdb> xxx"));
    }

    #[test]
    fn many_lines_typed_ahead_cost_linear_time() {
        // 200,000 lines pasted at once: each readline decodes only its own
        // line. Decoding the whole rest each time would take hours.
        let input = b"SET k v\r".repeat(200_000);
        let started = std::time::Instant::now();
        let (mut pos, mut lines) = (0, 0);
        while pos < input.len() {
            assert!(input_complete(&input[pos..]));
            let (keys, used) = decode(&input[pos..], false);
            assert!(matches!(keys.last(), Some((Key::Enter, _))));
            pos += used;
            lines += 1;
        }
        assert_eq!(lines, 200_000);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_long_line_costs_linear_time() {
        // 4 MB of keystrokes in 64 KiB reads: decode + insert + one render
        // per read. Quadratic work would take minutes; linear takes well
        // under a second even in a debug build.
        let bytes = vec![b'x'; 4 << 20];
        let started = std::time::Instant::now();
        let mut line = Line::default();
        for chunk in bytes.chunks(READ_CHUNK) {
            let (keys, used) = decode(chunk, false);
            assert_eq!(used, chunk.len());
            for (k, _) in keys {
                if let Key::Text(run) = k {
                    line.insert(&run);
                }
            }
            let _ = line.render("db> ", 80);
        }
        assert_eq!(line.chars.len(), 4 << 20);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
