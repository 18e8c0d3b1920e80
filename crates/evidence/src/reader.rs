//! A checked cursor over untrusted bytes (after rustls's `codec::Reader`): every read is
//! bounds-checked and returns an error naming the item and offset, never panics.

use crate::error::{Error, Item};

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    item: Item,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], item: Item) -> Self {
        Reader { buf, pos: 0, item }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Takes exactly `n` bytes or fails naming `what`.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.short(n, what))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.short(n, what))?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A sub-reader over the next `n` bytes (which the parent skips).
    pub(crate) fn sub(&mut self, n: usize, what: &str) -> Result<Reader<'a>, Error> {
        let s = self.take(n, what)?;
        Ok(Reader {
            buf: s,
            pos: 0,
            item: self.item,
        })
    }

    /// The rest of the input.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        out
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self, what: &str) -> Result<(), Error> {
        if self.remaining() != 0 {
            return Err(Error::malformed(
                self.item,
                format!("{} trailing bytes after {what}", self.remaining()),
            ));
        }
        Ok(())
    }

    fn short(&self, n: usize, what: &str) -> Error {
        Error::malformed(
            self.item,
            format!(
                "{what}: need {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_fail_without_panicking() {
        let mut r = Reader::new(&[1, 2, 3], Item::Quote);
        assert_eq!(r.u16("a").unwrap(), 0x0201);
        let e = r.u16("b").unwrap_err();
        assert!(e.to_string().contains("b: need 2 bytes at offset 2"), "{e}");
        assert_eq!(
            r.take(usize::MAX, "huge").unwrap_err().kind(),
            crate::ErrorKind::Malformed
        );
        assert_eq!(r.u8("c").unwrap(), 3);
        r.finish("all").unwrap();
    }

    #[test]
    fn finish_rejects_trailing_bytes() {
        let mut r = Reader::new(&[1, 2, 3], Item::Quote);
        r.u8("x").unwrap();
        assert!(r
            .finish("x")
            .unwrap_err()
            .to_string()
            .contains("2 trailing bytes"));
    }
}
