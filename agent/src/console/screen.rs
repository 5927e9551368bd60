//! What one console client has been shown: a shadow copy of the frame last sent, compared tile by
//! tile with the live framebuffer so that an incremental update carries only the tiles that
//! changed (merged into runs along each tile row). Pixels are XRGB8888 throughout.

use super::framebuffer::{FramebufferView, BYTES_PER_PIXEL};
use super::rfb::{PixelFormat, Rect, UpdateWriter};

/// Tile width in pixels.
const TILE_WIDTH: usize = 64;
/// Tile height in pixels.
const TILE_HEIGHT: usize = 16;

/// Where the live pixels come from (the mapped framebuffer, or a buffer in tests).
pub trait PixelSource {
    /// Copies `out.len()` bytes of row `y` from pixel `x` on.
    fn read(&self, x: usize, y: usize, out: &mut [u8]);
}

impl PixelSource for FramebufferView {
    fn read(&self, x: usize, y: usize, out: &mut [u8]) {
        FramebufferView::read(self, x, y, out)
    }
}

/// The frame a client holds.
pub struct Screen {
    width: usize,
    height: usize,
    shadow: Vec<u8>,
}

impl Screen {
    /// A client that has seen nothing yet of a `width`×`height` screen.
    pub fn new(width: usize, height: usize) -> Screen {
        Screen {
            width,
            height,
            shadow: vec![0; width * height * BYTES_PER_PIXEL],
        }
    }

    /// Reads the live pixels of `area` (clipped to the screen) into the shadow and returns the
    /// FramebufferUpdate to send: every tile of the area when not `incremental`, otherwise only
    /// the tiles that changed; `None` when an incremental update has nothing to send. Pixels
    /// are sent in the client's `format`.
    pub fn update(
        &mut self,
        source: &impl PixelSource,
        area: Rect,
        incremental: bool,
        format: PixelFormat,
    ) -> Option<Vec<u8>> {
        let area = self.clip(area)?;
        let mut changed = Vec::new();
        let mut row = vec![0u8; (area.2 - area.0) * BYTES_PER_PIXEL];
        for tile_top in (area.1..area.3).step_by(TILE_HEIGHT) {
            let tile_bottom = (tile_top + TILE_HEIGHT).min(area.3);
            let mut tiles = vec![!incremental; (area.2 - area.0).div_ceil(TILE_WIDTH)];
            for y in tile_top..tile_bottom {
                source.read(area.0, y, &mut row);
                let start = (y * self.width + area.0) * BYTES_PER_PIXEL;
                let shadow = &mut self.shadow[start..start + row.len()];
                for (i, (live, seen)) in row
                    .chunks(TILE_WIDTH * BYTES_PER_PIXEL)
                    .zip(shadow.chunks_mut(TILE_WIDTH * BYTES_PER_PIXEL))
                    .enumerate()
                {
                    if live != seen {
                        seen.copy_from_slice(live);
                        tiles[i] = true;
                    }
                }
            }
            changed.extend(runs(&tiles).map(|(first, count)| {
                let left = area.0 + first * TILE_WIDTH;
                let right = (left + count * TILE_WIDTH).min(area.2);
                Rect {
                    x: left as u16,
                    y: tile_top as u16,
                    width: (right - left) as u16,
                    height: (tile_bottom - tile_top) as u16,
                }
            }));
        }
        if changed.is_empty() && incremental {
            return None;
        }
        let mut update = UpdateWriter::new(format);
        for rect in changed {
            update.add_raw(rect, self.rows(rect));
        }
        Some(update.finish())
    }

    /// `area` as (left, top, right, bottom) inside the screen, or `None` if it is empty there.
    fn clip(&self, area: Rect) -> Option<(usize, usize, usize, usize)> {
        let left = usize::from(area.x).min(self.width);
        let top = usize::from(area.y).min(self.height);
        let right = (left + usize::from(area.width)).min(self.width);
        let bottom = (top + usize::from(area.height)).min(self.height);
        (left < right && top < bottom).then_some((left, top, right, bottom))
    }

    /// The shadow's rows of `rect`.
    fn rows(&self, rect: Rect) -> impl Iterator<Item = &[u8]> {
        let (x, w) = (usize::from(rect.x), usize::from(rect.width));
        (usize::from(rect.y)..usize::from(rect.y) + usize::from(rect.height)).map(move |y| {
            let start = (y * self.width + x) * BYTES_PER_PIXEL;
            &self.shadow[start..start + w * BYTES_PER_PIXEL]
        })
    }
}

/// Runs of set flags: (first index, length).
fn runs(flags: &[bool]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < flags.len() && !flags[i] {
            i += 1;
        }
        let first = i;
        while i < flags.len() && flags[i] {
            i += 1;
        }
        (i > first).then_some((first, i - first))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A screen in a buffer.
    struct Pixels {
        width: usize,
        bytes: RefCell<Vec<u8>>,
    }

    impl Pixels {
        fn new(width: usize, height: usize) -> Pixels {
            Pixels {
                width,
                bytes: RefCell::new(vec![0x11; width * height * 4]),
            }
        }

        fn paint(&self, x: usize, y: usize, value: u8) {
            let at = (y * self.width + x) * 4;
            self.bytes.borrow_mut()[at..at + 4].fill(value);
        }
    }

    impl PixelSource for Pixels {
        fn read(&self, x: usize, y: usize, out: &mut [u8]) {
            let at = (y * self.width + x) * 4;
            out.copy_from_slice(&self.bytes.borrow()[at..at + out.len()]);
        }
    }

    /// The rectangles of an update (position and size only).
    fn rects(update: &[u8]) -> Vec<Rect> {
        let count = u16::from_be_bytes([update[2], update[3]]);
        let mut pos = 4;
        (0..count)
            .map(|_| {
                let f = |i: usize| u16::from_be_bytes([update[pos + i], update[pos + i + 1]]);
                let rect = Rect {
                    x: f(0),
                    y: f(2),
                    width: f(4),
                    height: f(6),
                };
                pos += 12 + usize::from(rect.width) * usize::from(rect.height) * 4;
                rect
            })
            .collect()
    }

    const XRGB: PixelFormat = PixelFormat::XRGB8888;

    const WHOLE: Rect = Rect {
        x: 0,
        y: 0,
        width: 200,
        height: 40,
    };

    #[test]
    fn a_full_update_sends_everything_then_increments_only_changes() {
        let live = Pixels::new(200, 40);
        let mut screen = Screen::new(200, 40);
        let full = screen.update(&live, WHOLE, false, XRGB).unwrap();
        let sent = rects(&full);
        let area: usize = sent
            .iter()
            .map(|r| usize::from(r.width) * usize::from(r.height))
            .sum();
        assert_eq!(area, 200 * 40);
        assert!(full.len() > 200 * 40 * 4);
        assert_eq!(
            screen.update(&live, WHOLE, true, XRGB),
            None,
            "nothing changed"
        );

        live.paint(70, 17, 0xaa);
        live.paint(130, 17, 0xbb);
        live.paint(5, 39, 0xcc);
        let update = screen.update(&live, WHOLE, true, XRGB).unwrap();
        assert_eq!(
            rects(&update),
            [
                // two neighbouring tiles merge into one run; the last tile row is short
                Rect {
                    x: 64,
                    y: 16,
                    width: 128,
                    height: 16
                },
                Rect {
                    x: 0,
                    y: 32,
                    width: 64,
                    height: 8
                },
            ]
        );
        assert_eq!(screen.update(&live, WHOLE, true, XRGB), None);
    }

    #[test]
    fn updates_stay_inside_the_requested_area_and_the_screen() {
        let live = Pixels::new(200, 40);
        let mut screen = Screen::new(200, 40);
        let corner = Rect {
            x: 190,
            y: 30,
            width: 100,
            height: 100,
        };
        let update = screen.update(&live, corner, false, XRGB).unwrap();
        assert_eq!(
            rects(&update),
            [Rect {
                x: 190,
                y: 30,
                width: 10,
                height: 10
            }]
        );
        // pixels outside the area were not read, so they still differ from the shadow
        assert!(screen.update(&live, WHOLE, true, XRGB).is_some());
        let outside = Rect {
            x: 500,
            y: 0,
            width: 10,
            height: 10,
        };
        assert_eq!(screen.update(&live, outside, false, XRGB), None);
    }

    #[test]
    fn runs_group_adjacent_flags() {
        let flags = [true, true, false, true, false, false, true];
        assert_eq!(runs(&flags).collect::<Vec<_>>(), [(0, 2), (3, 1), (6, 1)]);
        assert_eq!(runs(&[false, false]).count(), 0);
    }
}
