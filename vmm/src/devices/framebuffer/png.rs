//! A minimal PNG encoder for screenshots: 8-bit RGB, one zlib-compressed IDAT, no filtering.

use std::io::Write;

use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
const COLOR_TYPE_RGB: u8 = 2;

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// Encodes `width`×`height` pixels given row by row as RGB triples.
pub fn encode_rgb(width: u32, height: u32, rgb_rows: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, COLOR_TYPE_RGB, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &header);
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::fast());
    for row in rgb_rows {
        // Writing into a Vec cannot fail.
        let _ = zlib.write_all(&[0]); // filter type: none
        let _ = zlib.write_all(&row);
    }
    let compressed = zlib.finish().unwrap_or_default();
    chunk(&mut out, b"IDAT", &compressed);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_image_has_the_png_structure() {
        let png = encode_rgb(2, 1, vec![vec![255, 0, 0, 0, 0, 255]].into_iter());
        assert_eq!(&png[..8], &SIGNATURE);
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 2);
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
        // IHDR CRC as computed by the reference zlib crc32.
        assert_eq!(
            u32::from_be_bytes(png[29..33].try_into().unwrap()),
            0x7b40_e8dd
        );
    }
}
