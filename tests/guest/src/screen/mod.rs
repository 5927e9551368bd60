//! The framebuffer console: everything printed on COM1 is also kept in a character grid
//! (scrolling), and `present` draws the cells that changed onto the linear framebuffer the
//! command line gives as `vireo.fb=<base>,<width>,<height>,<stride bytes>` (XRGB8888), light
//! grey on dark blue. Without that word the console is serial only.

pub mod font;

use core::ptr::write_volatile;

use crate::cell::BootCpuCell;
use crate::cmdline;
use crate::virtio::parse_number;
use font::{CELL_HEIGHT, CELL_WIDTH};

const MAX_COLUMNS: usize = 256;
const MAX_ROWS: usize = 128;
const FOREGROUND: u32 = 0x00d8_d8d8;
const BACKGROUND: u32 = 0x0010_1830;
/// A `shown` cell never drawn (no character is 0 in `text`).
const UNDRAWN: u8 = 0;
const BYTES_PER_PIXEL: u64 = 4;
const BACKSPACE: u8 = 0x08;

/// The linear framebuffer.
#[derive(Clone, Copy)]
struct Framebuffer {
    base: u64,
    stride: u64,
}

/// The character grid and what is on the framebuffer.
struct TextScreen {
    framebuffer: Option<Framebuffer>,
    columns: usize,
    rows: usize,
    /// Lines of text; screen row r is `text[(top + r) % rows]`.
    text: [[u8; MAX_COLUMNS]; MAX_ROWS],
    /// What each screen cell shows now.
    shown: [[u8; MAX_COLUMNS]; MAX_ROWS],
    top: usize,
    cursor_row: usize,
    cursor_column: usize,
}

static SCREEN: BootCpuCell<TextScreen> = BootCpuCell::new(TextScreen {
    framebuffer: None,
    columns: 0,
    rows: 0,
    text: [[b' '; MAX_COLUMNS]; MAX_ROWS],
    shown: [[UNDRAWN; MAX_COLUMNS]; MAX_ROWS],
    top: 0,
    cursor_row: 0,
    cursor_column: 0,
});

/// Uses the framebuffer of the command line's `vireo.fb=` word, if it is well-formed and lies
/// in the identity map. Returns whether the screen is on.
pub fn init(command_line: &str) -> bool {
    let Some(value) = cmdline::value(command_line, "vireo.fb") else {
        return false;
    };
    let mut fields = value.split(',').map(parse_number);
    let (Some(Some(base)), Some(Some(width)), Some(Some(height)), Some(Some(stride))) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let fits = width * BYTES_PER_PIXEL <= stride
        && base
            .checked_add(stride * height)
            .is_some_and(|end| end <= crate::phys::MAPPED_LIMIT);
    if !fits || base == 0 {
        return false;
    }
    SCREEN.with(|screen| {
        screen.framebuffer = Some(Framebuffer { base, stride });
        screen.columns = (width as usize / CELL_WIDTH).min(MAX_COLUMNS);
        screen.rows = (height as usize / CELL_HEIGHT).min(MAX_ROWS);
    });
    true
}

/// Adds console output to the grid (newline, carriage return and backspace are honoured).
pub fn write(bytes: &[u8]) {
    SCREEN.with(|screen| {
        if screen.framebuffer.is_some() {
            bytes.iter().for_each(|&byte| screen.put(byte));
        }
    });
}

/// Draws the cells that changed since the last call.
pub fn present() {
    SCREEN.with(TextScreen::present);
}

impl TextScreen {
    fn put(&mut self, byte: u8) {
        match byte {
            b'\n' => self.new_line(),
            b'\r' => self.cursor_column = 0,
            BACKSPACE => self.cursor_column = self.cursor_column.saturating_sub(1),
            b' '..=b'~' => {
                if self.cursor_column == self.columns {
                    self.new_line();
                }
                let line = self.line_of(self.cursor_row);
                self.text[line][self.cursor_column] = byte;
                self.cursor_column += 1;
            }
            _ => {}
        }
    }

    fn new_line(&mut self) {
        self.cursor_column = 0;
        if self.cursor_row + 1 < self.rows {
            self.cursor_row += 1;
            return;
        }
        self.top = (self.top + 1) % self.rows;
        let last = self.line_of(self.rows - 1);
        self.text[last].fill(b' ');
    }

    fn line_of(&self, screen_row: usize) -> usize {
        (self.top + screen_row) % self.rows
    }

    fn present(&mut self) {
        let Some(framebuffer) = self.framebuffer else {
            return;
        };
        for row in 0..self.rows {
            let line = self.line_of(row);
            for column in 0..self.columns {
                let character = self.text[line][column];
                if self.shown[row][column] != character {
                    framebuffer.draw(column, row, character);
                    self.shown[row][column] = character;
                }
            }
        }
    }
}

impl Framebuffer {
    fn draw(&self, column: usize, row: usize, character: u8) {
        let left = self.base + (column * CELL_WIDTH) as u64 * BYTES_PER_PIXEL;
        for (y, bits) in font::glyph(character).into_iter().enumerate() {
            let line = left + (row * CELL_HEIGHT + y) as u64 * self.stride;
            for x in 0..CELL_WIDTH {
                let lit = bits & (0x80 >> x) != 0;
                let pixel = (line + x as u64 * BYTES_PER_PIXEL) as *mut u32;
                // SAFETY: inside the framebuffer (`init` checked its extent); nothing else
                // holds a reference to that memory.
                unsafe { write_volatile(pixel, if lit { FOREGROUND } else { BACKGROUND }) };
            }
        }
    }
}
