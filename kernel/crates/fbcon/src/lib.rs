//! A text console on a linear framebuffer, for machines without a serial
//! port: glyphs from the pre-rasterised Noto Sans Mono font
//! (`noto-sans-mono-bitmap`, anti-aliased, no allocation), line wrapping,
//! scrolling, and the control characters log lines use (`\n`, `\r`, `\t`;
//! ANSI escape sequences are skipped). The caller owns the pixels and hands
//! them in as a [`Surface`]; nothing here touches hardware, so it is tested
//! on the host against a byte buffer.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

use noto_sans_mono_bitmap::{FontWeight, RasterHeight, get_raster, get_raster_width};

const WEIGHT: FontWeight = FontWeight::Regular;
const SIZE: RasterHeight = RasterHeight::Size16;
/// Width of one character cell in pixels.
pub const CELL_WIDTH: usize = get_raster_width(WEIGHT, SIZE);
/// Height of one character cell in pixels (the glyph plus line spacing).
pub const CELL_HEIGHT: usize = SIZE.val() + 2;
/// Blank pixels around the text.
pub const MARGIN: usize = 8;

/// How a pixel's colour channels are laid out (from the bootloader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    /// Bytes per pixel (2, 3 or 4).
    pub bytes_per_pixel: usize,
    /// Red channel: (shift, size) in bits.
    pub red: (u8, u8),
    /// Green channel: (shift, size).
    pub green: (u8, u8),
    /// Blue channel: (shift, size).
    pub blue: (u8, u8),
}

impl PixelFormat {
    /// 32-bit pixels, 8 bits per channel, blue in the lowest byte (what
    /// UEFI GOP and QEMU's displays give).
    pub const XRGB8888: Self = Self { bytes_per_pixel: 4, red: (16, 8), green: (8, 8), blue: (0, 8) };

    /// A grey of `intensity` (0 black, 255 white) as a pixel value.
    fn grey(&self, intensity: u8) -> u32 {
        let channel = |(shift, size): (u8, u8)| {
            let size = size.min(8);
            if size == 0 || shift >= 32 { 0 } else { (u32::from(intensity) >> (8 - size)) << shift }
        };
        channel(self.red) | channel(self.green) | channel(self.blue)
    }
}

/// The framebuffer's pixels and geometry.
#[derive(Debug)]
pub struct Surface<'pixels> {
    /// Every row of pixels, `pitch` bytes apart.
    pub pixels: &'pixels mut [u8],
    /// Visible width in pixels.
    pub width: usize,
    /// Visible height in pixels.
    pub height: usize,
    /// Bytes from one row to the next.
    pub pitch: usize,
    /// Pixel layout.
    pub format: PixelFormat,
}

impl Surface<'_> {
    /// Whether the geometry fits the buffer and the format is one we draw.
    pub fn is_valid(&self) -> bool {
        matches!(self.format.bytes_per_pixel, 2..=4)
            && self.width.checked_mul(self.format.bytes_per_pixel).is_some_and(|row| row <= self.pitch)
            && self.pitch.checked_mul(self.height).is_some_and(|bytes| bytes <= self.pixels.len())
    }

    fn put(&mut self, x: usize, y: usize, value: u32) {
        let bytes = self.format.bytes_per_pixel;
        let offset = y * self.pitch + x * bytes;
        if let Some(pixel) = self.pixels.get_mut(offset..offset + bytes) {
            pixel.copy_from_slice(&value.to_le_bytes()[..bytes]);
        }
    }

    /// The pixel value at (x, y) (tests and screenshots).
    pub fn get(&self, x: usize, y: usize) -> u32 {
        let bytes = self.format.bytes_per_pixel;
        let offset = y * self.pitch + x * bytes;
        let mut value = [0u8; 4];
        if let Some(pixel) = self.pixels.get(offset..offset + bytes) {
            value[..bytes].copy_from_slice(pixel);
        }
        u32::from_le_bytes(value)
    }

    fn fill_rows(&mut self, first_row: usize, rows: usize) {
        let start = (first_row * self.pitch).min(self.pixels.len());
        let end = ((first_row + rows) * self.pitch).min(self.pixels.len());
        self.pixels[start..end].fill(0);
    }
}

/// Where the console is in an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// Inside `ESC [ ...` until its final byte.
    Csi,
}

/// The console's text state: the grid and the cursor.
#[derive(Debug, Clone)]
pub struct TextConsole {
    columns: usize,
    rows: usize,
    column: usize,
    row: usize,
    escape: Escape,
    /// Lines a full screen moves up by at once.
    scroll_step: usize,
    /// Pixel rows changed since the last [`TextConsole::take_dirty`].
    dirty: Option<(usize, usize)>,
}

impl TextConsole {
    /// A console for `surface`, or `None` when the surface is invalid or
    /// smaller than one line of ten characters.
    pub fn new(surface: &Surface<'_>) -> Option<Self> {
        if !surface.is_valid() {
            return None;
        }
        let columns = surface.width.saturating_sub(2 * MARGIN) / CELL_WIDTH;
        let rows = surface.height.saturating_sub(2 * MARGIN) / CELL_HEIGHT;
        (columns >= 10 && rows >= 1).then_some(Self {
            columns,
            rows,
            column: 0,
            row: 0,
            escape: Escape::None,
            scroll_step: 1,
            dirty: None,
        })
    }

    /// Makes a full screen move up by `lines` at once (clamped to the
    /// screen) instead of one. Scrolling moves every pixel, so on a large
    /// framebuffer scrolling a third of the screen at a time costs a
    /// fraction of scrolling line by line, and the newest lines stay in view.
    pub fn set_scroll_step(&mut self, lines: usize) {
        self.scroll_step = lines.clamp(1, self.rows);
    }

    /// Characters per line.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Lines on the screen.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The cursor: (column, row).
    pub fn cursor(&self) -> (usize, usize) {
        (self.column, self.row)
    }

    /// The pixel rows `[first, end)` changed since the last call, if any:
    /// what a caller drawing into a shadow buffer must copy to the screen.
    pub fn take_dirty(&mut self) -> Option<(usize, usize)> {
        self.dirty.take()
    }

    fn mark(&mut self, first: usize, end: usize) {
        self.dirty = Some(match self.dirty {
            Some((low, high)) => (low.min(first), high.max(end)),
            None => (first, end),
        });
    }

    /// Blanks the screen and puts the cursor top left.
    pub fn clear(&mut self, surface: &mut Surface<'_>) {
        surface.fill_rows(0, surface.height);
        self.column = 0;
        self.row = 0;
        self.mark(0, surface.height);
    }

    /// Continues below whatever is on the screen (after an update, the
    /// previous kernel's lines stay and scroll up).
    pub fn continue_at_bottom(&mut self, surface: &mut Surface<'_>) {
        self.row = self.rows - 1;
        self.column = 0;
        self.scroll(surface, 1);
    }

    /// Draws `text`, wrapping and scrolling as needed.
    pub fn write_str(&mut self, surface: &mut Surface<'_>, text: &str) {
        for character in text.chars() {
            self.write_char(surface, character);
        }
    }

    fn write_char(&mut self, surface: &mut Surface<'_>, character: char) {
        match (self.escape, character) {
            (Escape::None, '\u{1b}') => self.escape = Escape::Started,
            (Escape::Started, '[') => self.escape = Escape::Csi,
            (Escape::Started, _) => self.escape = Escape::None,
            (Escape::Csi, '\u{40}'..='\u{7e}') => self.escape = Escape::None,
            (Escape::Csi, _) => {}
            (Escape::None, '\n') => self.newline(surface),
            (Escape::None, '\r') => self.column = 0,
            (Escape::None, '\t') => {
                for _ in 0..(8 - self.column % 8) {
                    self.write_char(surface, ' ');
                }
            }
            (Escape::None, character) if character.is_control() => {}
            (Escape::None, character) => {
                if self.column == self.columns {
                    self.newline(surface);
                }
                self.draw(surface, character);
                self.column += 1;
            }
        }
    }

    fn newline(&mut self, surface: &mut Surface<'_>) {
        self.column = 0;
        if self.row + 1 < self.rows {
            self.row += 1;
        } else {
            self.scroll(surface, self.scroll_step);
            self.row = self.rows - self.scroll_step;
        }
    }

    /// Moves every line up by `lines` (at most the screen) and blanks the
    /// lines that opened at the bottom.
    fn scroll(&mut self, surface: &mut Surface<'_>, lines: usize) {
        let lines = lines.min(self.rows);
        let shift = lines * CELL_HEIGHT * surface.pitch;
        let top = MARGIN * surface.pitch;
        let end = ((MARGIN + self.rows * CELL_HEIGHT) * surface.pitch).min(surface.pixels.len());
        if top + shift < end {
            surface.pixels.copy_within(top + shift..end, top);
        }
        surface.fill_rows(MARGIN + (self.rows - lines) * CELL_HEIGHT, lines * CELL_HEIGHT);
        self.mark(MARGIN, MARGIN + self.rows * CELL_HEIGHT);
    }

    fn draw(&mut self, surface: &mut Surface<'_>, character: char) {
        let raster = get_raster(character, WEIGHT, SIZE).or_else(|| get_raster('?', WEIGHT, SIZE));
        let x0 = MARGIN + self.column * CELL_WIDTH;
        let y0 = MARGIN + self.row * CELL_HEIGHT;
        self.mark(y0, y0 + CELL_HEIGHT);
        for y in 0..CELL_HEIGHT {
            for x in 0..CELL_WIDTH {
                surface.put(x0 + x, y0 + y, 0);
            }
        }
        let Some(raster) = raster else { return };
        for (y, line) in raster.raster().iter().enumerate() {
            for (x, &intensity) in line.iter().enumerate() {
                if intensity != 0 {
                    let value = surface.format.grey(intensity);
                    surface.put(x0 + x, y0 + y, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDTH: usize = 2 * MARGIN + 20 * CELL_WIDTH;
    const HEIGHT: usize = 2 * MARGIN + 3 * CELL_HEIGHT;

    fn buffer(bytes_per_pixel: usize) -> Vec<u8> {
        vec![0; WIDTH * bytes_per_pixel * HEIGHT]
    }

    fn surface(pixels: &mut [u8], format: PixelFormat) -> Surface<'_> {
        Surface { pixels, width: WIDTH, height: HEIGHT, pitch: WIDTH * format.bytes_per_pixel, format }
    }

    /// Lit pixels inside the character cell (column, row).
    fn lit(surface: &Surface<'_>, column: usize, row: usize) -> usize {
        let (x0, y0) = (MARGIN + column * CELL_WIDTH, MARGIN + row * CELL_HEIGHT);
        (0..CELL_HEIGHT)
            .flat_map(|y| (0..CELL_WIDTH).map(move |x| (x, y)))
            .filter(|&(x, y)| surface.get(x0 + x, y0 + y) != 0)
            .count()
    }

    fn cell(surface: &Surface<'_>, column: usize, row: usize) -> Vec<u32> {
        let (x0, y0) = (MARGIN + column * CELL_WIDTH, MARGIN + row * CELL_HEIGHT);
        (0..CELL_HEIGHT).flat_map(|y| (0..CELL_WIDTH).map(move |x| surface.get(x0 + x, y0 + y))).collect()
    }

    #[test]
    fn characters_land_in_their_cells() {
        let mut pixels = buffer(4);
        let mut surface = surface(&mut pixels, PixelFormat::XRGB8888);
        let mut console = TextConsole::new(&surface).unwrap();
        assert_eq!((console.columns(), console.rows()), (20, 3));
        console.write_str(&mut surface, "A B\nC");
        assert!(lit(&surface, 0, 0) > 10, "A is drawn");
        assert_eq!(lit(&surface, 1, 0), 0, "a space stays blank");
        assert!(lit(&surface, 2, 0) > 10);
        assert!(lit(&surface, 0, 1) > 10, "C is on the next line");
        assert_eq!(console.cursor(), (1, 1));
        assert_ne!(cell(&surface, 0, 0), cell(&surface, 2, 0), "A and B differ");
    }

    #[test]
    fn long_lines_wrap_and_full_screens_scroll() {
        let mut pixels = buffer(4);
        let mut surface = surface(&mut pixels, PixelFormat::XRGB8888);
        let mut console = TextConsole::new(&surface).unwrap();
        console.write_str(&mut surface, &"x".repeat(25));
        assert_eq!(console.cursor(), (5, 1), "20 on the first line, 5 on the second");
        console.clear(&mut surface);
        console.write_str(&mut surface, "1\n2\n3");
        let two = cell(&surface, 0, 1);
        let three = cell(&surface, 0, 2);
        assert_eq!(console.take_dirty(), Some((0, HEIGHT)), "the clear dirtied everything");
        console.write_str(&mut surface, "\n4");
        assert_eq!(console.cursor(), (1, 2), "the cursor stays on the last line");
        assert_eq!(cell(&surface, 0, 0), two, "every line moved up by one");
        assert_eq!(console.take_dirty(), Some((MARGIN, MARGIN + 3 * CELL_HEIGHT)), "a scroll dirties every line");
        assert_eq!(console.take_dirty(), None);
        console.write_str(&mut surface, "5");
        assert_eq!(console.take_dirty(), Some((MARGIN + 2 * CELL_HEIGHT, MARGIN + 3 * CELL_HEIGHT)));
        assert_eq!(cell(&surface, 0, 1), three);
        assert!(lit(&surface, 0, 2) > 10, "4 is on the last line");
        assert_ne!(cell(&surface, 0, 2), three);
    }

    #[test]
    fn a_scroll_step_moves_several_lines_at_once() {
        let mut pixels = buffer(4);
        let mut surface = surface(&mut pixels, PixelFormat::XRGB8888);
        let mut console = TextConsole::new(&surface).unwrap();
        console.set_scroll_step(2);
        console.write_str(&mut surface, "1\n2\n3");
        let three = cell(&surface, 0, 2);
        console.write_str(&mut surface, "\n4");
        assert_eq!(console.cursor(), (1, 1), "two lines opened; 4 goes on the first of them");
        assert_eq!(cell(&surface, 0, 0), three, "3 moved up by two lines");
        assert!(lit(&surface, 0, 1) > 10, "4 is drawn");
        assert_eq!(lit(&surface, 0, 2), 0, "the last line is blank");
        console.set_scroll_step(99);
        console.write_str(&mut surface, "\n5\n6");
        assert_eq!(console.cursor(), (1, 0), "a step larger than the screen clears it");
        assert!(lit(&surface, 0, 0) > 10);
        assert_eq!(lit(&surface, 0, 1) + lit(&surface, 0, 2), 0);
    }

    #[test]
    fn escape_sequences_and_control_characters_draw_nothing() {
        let mut pixels = buffer(4);
        let mut surface = surface(&mut pixels, PixelFormat::XRGB8888);
        let mut console = TextConsole::new(&surface).unwrap();
        console.write_str(&mut surface, "\u{1b}[1;31mA\u{1b}[0m\u{7}");
        assert_eq!(console.cursor(), (1, 0));
        console.write_str(&mut surface, "\rB\tC");
        assert_eq!(console.cursor(), (9, 0), "B over A, then a tab to column 8");
        assert!(lit(&surface, 8, 0) > 10);
    }

    #[test]
    fn pixel_formats_place_the_grey_in_every_channel() {
        let rgb565 = PixelFormat { bytes_per_pixel: 2, red: (11, 5), green: (5, 6), blue: (0, 5) };
        assert_eq!(rgb565.grey(255), 0xffff);
        assert_eq!(PixelFormat::XRGB8888.grey(0x80), 0x0080_8080);
        let bgr = PixelFormat { bytes_per_pixel: 3, red: (0, 8), green: (8, 8), blue: (16, 8) };
        let mut pixels = buffer(3);
        let mut surface = surface(&mut pixels, bgr);
        let mut console = TextConsole::new(&surface).unwrap();
        console.write_str(&mut surface, "W");
        assert!(lit(&surface, 0, 0) > 10);
    }

    #[test]
    fn impossible_geometry_is_refused() {
        let mut pixels = vec![0u8; 100];
        let too_small =
            Surface { pixels: &mut pixels, width: 10, height: 10, pitch: 40, format: PixelFormat::XRGB8888 };
        assert!(TextConsole::new(&too_small).is_none());
        let mut pixels = buffer(4);
        let short_buffer = Surface {
            pixels: &mut pixels,
            width: WIDTH,
            height: HEIGHT * 2,
            pitch: WIDTH * 4,
            format: PixelFormat::XRGB8888,
        };
        assert!(!short_buffer.is_valid());
        let mut pixels = buffer(4);
        let narrow_pitch =
            Surface { pixels: &mut pixels, width: WIDTH, height: HEIGHT, pitch: WIDTH, format: PixelFormat::XRGB8888 };
        assert!(TextConsole::new(&narrow_pitch).is_none());
    }
}
