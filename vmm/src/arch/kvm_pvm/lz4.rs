//! The LZ4 "legacy" stream format (`lz4 -l`, what Linux's `CONFIG_KERNEL_LZ4` compresses a
//! bzImage's payload with): a magic number, then independent blocks of at most 8 MiB, each
//! preceded by its compressed length. Every length and back-reference is checked against the
//! input and the output limit; a malformed stream is an error, never a panic.

const LEGACY_MAGIC: u32 = 0x184c_2102;
/// Largest decompressed block of the legacy format.
const BLOCK_MAX: usize = 8 << 20;

/// Why a stream does not decompress.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Lz4Error {
    /// The stream does not start with the legacy magic number.
    #[error("not an LZ4 legacy stream (bad magic)")]
    Magic,
    /// A length or offset points outside the input or the output.
    #[error("corrupt LZ4 block at input offset {0}")]
    Corrupt(usize),
    /// The output would exceed the limit.
    #[error("LZ4 stream decompresses to more than {0} bytes")]
    TooLarge(usize),
}

fn read_u32(input: &[u8], at: usize) -> Option<u32> {
    let bytes = input.get(at..at + 4)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Decompresses a legacy stream of at most `limit` bytes of output.
pub fn decompress_legacy(input: &[u8], limit: usize) -> Result<Vec<u8>, Lz4Error> {
    if read_u32(input, 0) != Some(LEGACY_MAGIC) {
        return Err(Lz4Error::Magic);
    }
    let mut out = Vec::new();
    let mut at = 4;
    while at < input.len() {
        let size = read_u32(input, at).ok_or(Lz4Error::Corrupt(at))?;
        at += 4;
        if size == LEGACY_MAGIC {
            continue; // concatenated streams
        }
        let end = at
            .checked_add(size as usize)
            .filter(|&e| e <= input.len())
            .ok_or(Lz4Error::Corrupt(at))?;
        decompress_block(&input[at..end], &mut out, limit).map_err(|e| match e {
            Lz4Error::Corrupt(off) => Lz4Error::Corrupt(at + off),
            other => other,
        })?;
        at = end;
    }
    Ok(out)
}

/// Reads an LZ4 length continuation (bytes of 255 add up until a smaller byte).
fn extend_length(block: &[u8], pos: &mut usize, mut length: usize) -> Result<usize, Lz4Error> {
    loop {
        let byte = *block.get(*pos).ok_or(Lz4Error::Corrupt(*pos))?;
        *pos += 1;
        length += usize::from(byte);
        if byte != 255 {
            return Ok(length);
        }
    }
}

/// Checks that `more` bytes fit in the output (the limit and the block size).
fn room(out: &[u8], start: usize, more: usize, limit: usize) -> Result<(), Lz4Error> {
    if out.len() + more > limit {
        return Err(Lz4Error::TooLarge(limit));
    }
    if out.len() + more - start > BLOCK_MAX {
        return Err(Lz4Error::Corrupt(0));
    }
    Ok(())
}

/// Decompresses one block onto `out` (offsets in errors are within the block).
fn decompress_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Lz4Error> {
    let corrupt = Lz4Error::Corrupt;
    let start = out.len();
    let mut pos = 0;
    while pos < block.len() {
        let token = block[pos];
        pos += 1;
        let mut literals = usize::from(token >> 4);
        if literals == 15 {
            literals = extend_length(block, &mut pos, literals)?;
        }
        let source = block.get(pos..pos + literals).ok_or(corrupt(pos))?;
        room(out, start, literals, limit)?;
        out.extend_from_slice(source);
        pos += literals;
        if pos == block.len() {
            break; // the last sequence has literals only
        }
        let offset = usize::from(u16::from_le_bytes([
            *block.get(pos).ok_or(corrupt(pos))?,
            *block.get(pos + 1).ok_or(corrupt(pos))?,
        ]));
        pos += 2;
        let mut length = usize::from(token & 0xf);
        if length == 15 {
            length = extend_length(block, &mut pos, length)?;
        }
        length += 4;
        if offset == 0 || offset > out.len() - start {
            return Err(corrupt(pos));
        }
        room(out, start, length, limit)?;
        let from = out.len() - offset;
        for i in 0..length {
            let byte = out[from + i];
            out.push(byte);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy stream of one hand-assembled block: "abcd" literal, a match of 8 at offset 4
    /// (overlapping), then the literals "xyz".
    fn sample() -> Vec<u8> {
        let block = [0x44, b'a', b'b', b'c', b'd', 4, 0, 0x30, b'x', b'y', b'z'];
        let mut s = LEGACY_MAGIC.to_le_bytes().to_vec();
        s.extend_from_slice(&(block.len() as u32).to_le_bytes());
        s.extend_from_slice(&block);
        s
    }

    #[test]
    fn decodes_literals_and_overlapping_matches() {
        let out = decompress_legacy(&sample(), 1 << 20).unwrap();
        assert_eq!(out, b"abcdabcdabcdxyz");
    }

    #[test]
    fn rejects_bad_magic_truncation_bad_offsets_and_overlong_output() {
        assert_eq!(
            decompress_legacy(b"\x02\x21\x4c\x19", 100),
            Err(Lz4Error::Magic)
        );
        let stream = sample();
        assert!(matches!(
            decompress_legacy(&stream[..stream.len() - 2], 100),
            Err(Lz4Error::Corrupt(_))
        ));
        let mut bad_offset = sample();
        bad_offset[13] = 9; // match offset beyond what was output
        assert!(matches!(
            decompress_legacy(&bad_offset, 100),
            Err(Lz4Error::Corrupt(_))
        ));
        assert_eq!(
            decompress_legacy(&sample(), 10),
            Err(Lz4Error::TooLarge(10))
        );
    }
}
