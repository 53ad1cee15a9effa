//! Server-sent events as lariat reads them: a line reader that hands out each
//! event's data.

/// An SSE line reader (the HTML spec's rules, as far as lariat reads events: `data`
/// fields joined by newlines, comments and other fields skipped, a leading BOM
/// dropped, lines ending in LF, CRLF or CR). Lines are found with `memchr` in one
/// reused buffer; only the data of an event is copied, into another reused buffer.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    read: usize,
    data: Vec<u8>,
    /// `data` holds an event already handed out.
    dispatched: bool,
    started: bool,
    /// No more bytes will come: a CR last in the buffer ends its line.
    ended: bool,
}

impl Lines {
    pub fn push(&mut self, mut chunk: &[u8]) {
        if !self.started && !chunk.is_empty() {
            self.started = true;
            chunk = chunk.strip_prefix("\u{feff}".as_bytes()).unwrap_or(chunk);
        }
        self.buf.drain(..self.read);
        self.read = 0;
        self.buf.extend_from_slice(chunk);
    }

    /// The stream ended: no CR in the buffer waits for an LF any more.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Bytes of the event still arriving: its data so far and the line not yet ended.
    pub fn unfinished(&self) -> usize {
        self.data.len() + (self.buf.len() - self.read)
    }

    /// The data of the next whole event, if one is buffered.
    pub fn next_event(&mut self) -> Option<&[u8]> {
        if std::mem::take(&mut self.dispatched) {
            self.data.clear();
        }
        loop {
            let unread = &self.buf[self.read..];
            let end = memchr::memchr2(b'\n', b'\r', unread)?;
            let ending = match (unread[end], unread.get(end + 1)) {
                (b'\n', _) => 1,
                (_, Some(b'\n')) => 2,
                (_, Some(_)) => 1,
                (_, None) if self.ended => 1,
                // A CR last in the buffer may be half of a CRLF: wait for the next byte.
                (_, None) => return None,
            };
            let line = &unread[..end];
            self.read += end + ending;
            if line.is_empty() {
                if self.data.pop().is_some() {
                    self.dispatched = true;
                    return Some(&self.data);
                }
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (name, value) = match memchr::memchr(b':', line) {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            if name == b"data" {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_the_spec_way() {
        let mut lines = Lines::default();
        lines.push("\u{feff}: comment\r\nevent: x\r\ndata: a\rdata:b\n\n".as_bytes());
        assert_eq!(lines.next_event(), Some(&b"a\nb"[..]), "BOM, comment and other fields skipped");
        lines.push(b"data: c\r");
        assert_eq!(lines.next_event(), None, "a CR last in the buffer may be half of a CRLF");
        lines.push(b"\n\r\ndata\n\n");
        assert_eq!(lines.next_event(), Some(&b"c"[..]));
        assert_eq!(lines.next_event(), Some(&b""[..]), "a field without a colon has an empty value");
        assert_eq!(lines.next_event(), None);
    }
}
