//! `--dump-kho DIR`: saves the first outgoing handover from guest memory
//! while the guest waits after finalising (`kho.pause=1`): the root FDT and
//! every sub-FDT as `.dtb` files, the guest's RAM as one file with an index,
//! then lets the update continue.

use anyhow::{Context, Result, bail};
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Watches the serial console and dumps when the guest pauses.
pub struct Dumper {
    directory: PathBuf,
    socket: PathBuf,
    root: Option<(u64, u64)>,
    sub_fdts: Vec<(String, u64, u64)>,
    ram: Vec<(u64, u64)>,
    is_done: bool,
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim().trim_start_matches("0x").trim_start_matches('['), 16).ok()
}

impl Dumper {
    /// Prepares `directory` and adds a monitor socket to the QEMU command.
    pub fn new(directory: &Path, scratch: &Path, command: &mut Command) -> Result<Self> {
        std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
        std::fs::create_dir_all(scratch)?;
        let socket = scratch.join("monitor.sock");
        let _ = std::fs::remove_file(&socket);
        command.args(["-monitor", &format!("unix:{},server=on,wait=off", socket.display())]);
        Ok(Self {
            directory: directory.to_path_buf(),
            socket,
            root: None,
            sub_fdts: Vec::new(),
            ram: Vec::new(),
            is_done: false,
        })
    }

    /// Reads one console line; dumps and answers the guest when it pauses.
    pub fn on_line(&mut self, line: &str, input: &mut dyn Write) -> Result<()> {
        if self.is_done {
            return Ok(());
        }
        let kind_is_ram = ["usable", "acpi-reclaimable", "kernel-and-modules", "bootloader-reclaimable"]
            .iter()
            .any(|kind| line.trim_end().ends_with(kind));
        if line.contains("[INFO  boot]   [") && kind_is_ram {
            // "[0x000000100000-0x00000ffdf000)   260988 KiB usable"
            // Timestamped or not, the range follows the line's last '['.
            let range = line.rsplit('[').next().and_then(|rest| rest.split(')').next());
            if let Some((start, end)) = range.and_then(|range| range.split_once('-'))
                && let (Some(start), Some(end)) = (hex(start), hex(end))
            {
                self.ram.push((start, end - start));
            }
        } else if let Some(rest) = line.split("finalised: root FDT at ").nth(1) {
            let address = rest.split_whitespace().next().and_then(hex);
            let size = rest.split('(').nth(1).and_then(|size| size.split_whitespace().next()?.parse().ok());
            self.root = address.zip(size);
        } else if let Some(rest) = line.split("sub-FDT '").nth(1) {
            let (name, rest) = rest.split_once("' at ").context("sub-FDT line")?;
            let address = rest.split_whitespace().next().and_then(hex);
            let size = rest.split('(').nth(1).and_then(|size| size.split_whitespace().next()?.parse().ok());
            if let (Some(address), Some(size)) = (address, size) {
                self.sub_fdts.push((name.to_string(), address, size));
            }
        } else if line.contains("paused after finalisation") {
            self.is_done = true;
            let result = self.dump();
            input.write_all(b"\n").context("answering the guest")?;
            input.flush().context("answering the guest")?;
            result?;
            println!("  dump-kho: saved the handover in {}", self.directory.display());
        }
        Ok(())
    }

    fn dump(&self) -> Result<()> {
        let mut monitor = Monitor::connect(&self.socket)?;
        let (root, size) = self.root.context("the guest never logged its root FDT")?;
        monitor.save(root, size, &self.directory.join("kho-root.dtb"))?;
        for (name, address, size) in &self.sub_fdts {
            monitor.save(*address, *size, &self.directory.join(format!("{name}.dtb")))?;
        }
        let mut index = String::from("# file offset, physical start, size (hex): RAM saved in memory.bin\n");
        let mut memory = std::fs::File::create(self.directory.join("memory.bin"))?;
        let mut offset = 0u64;
        for (number, &(start, size)) in self.ram.iter().enumerate() {
            let part = self.directory.join(format!(".ram-{number}.part"));
            monitor.save(start, size, &part)?;
            let mut bytes = Vec::new();
            std::fs::File::open(&part)?.read_to_end(&mut bytes)?;
            std::fs::remove_file(&part)?;
            memory.write_all(&bytes)?;
            index.push_str(&format!("{offset:#x} {start:#x} {size:#x}\n"));
            offset += size;
        }
        std::fs::write(self.directory.join("memory-index.txt"), index)?;
        Ok(())
    }
}

/// Takes a screenshot of the guest's display when the kernel pauses before
/// shutting down (`demo.screenshot=1`), then lets it go on.
pub struct Screenshot {
    socket: PathBuf,
    output: PathBuf,
    is_done: bool,
}

impl Screenshot {
    /// Adds a monitor socket to the QEMU command; the picture goes to
    /// `output` (PPM, as QEMU writes it).
    pub fn new(scratch: &Path, output: &Path, command: &mut Command) -> Result<Self> {
        std::fs::create_dir_all(scratch)?;
        let socket = scratch.join("screenshot-monitor.sock");
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(output);
        command.args(["-monitor", &format!("unix:{},server=on,wait=off", socket.display())]);
        Ok(Self { socket, output: output.to_path_buf(), is_done: false })
    }

    /// Reads one console line; takes the screenshot when the guest pauses.
    pub fn on_line(&mut self, line: &str, input: &mut dyn Write) -> Result<()> {
        if self.is_done || !line.contains("paused before shutdown") {
            return Ok(());
        }
        self.is_done = true;
        let result = Monitor::connect(&self.socket).and_then(|mut monitor| {
            let command = format!("screendump \"{}\"\n", self.output.display());
            monitor.stream.get_mut().write_all(command.as_bytes())?;
            monitor.prompt().map(drop)
        });
        input.write_all(b"\n").context("answering the guest")?;
        input.flush().context("answering the guest")?;
        result
    }

    /// After QEMU exits: keeps the screenshot as a PNG next to where QEMU
    /// wrote it and returns that path and the fraction of lit pixels.
    pub fn finish(&self) -> Result<(PathBuf, f64)> {
        anyhow::ensure!(self.is_done, "the guest never paused before shutdown");
        let ppm = std::fs::read(&self.output).with_context(|| format!("reading {}", self.output.display()))?;
        let picture = Picture::from_ppm(&ppm)?;
        let png = self.output.with_extension("png");
        picture.write_png(&png)?;
        std::fs::remove_file(&self.output)?;
        Ok((png, picture.lit_fraction()))
    }
}

/// Hands a console line to whichever of the dumper and the screenshot
/// taker a run uses (each answers the guest when it pauses for it); their
/// errors are printed, prefixed with `indent`, and the run goes on.
pub fn watch_line(
    dumper: &mut Option<Dumper>,
    screenshot: &mut Option<Screenshot>,
    line: &str,
    input: &mut dyn Write,
    indent: &str,
) {
    if let Some(dumper) = dumper.as_mut()
        && let Err(error) = dumper.on_line(line, input)
    {
        println!("{indent}dump-kho: {error:#}");
    }
    if let Some(screenshot) = screenshot.as_mut()
        && let Err(error) = screenshot.on_line(line, input)
    {
        println!("{indent}screenshot: {error:#}");
    }
}

/// A binary PPM (P6) picture, as QEMU's `screendump` writes it.
#[derive(Debug)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB bytes, row by row.
    pub rgb: Vec<u8>,
}

impl Picture {
    /// Reads a P6 PPM with 8-bit channels.
    pub fn from_ppm(ppm: &[u8]) -> Result<Self> {
        // Header: "P6" width height maxval, whitespace-separated, then one
        // whitespace byte and the pixels.
        let mut fields = Vec::new();
        let mut position = 0;
        while fields.len() < 4 {
            while ppm.get(position).is_some_and(u8::is_ascii_whitespace) {
                position += 1;
            }
            let start = position;
            while ppm.get(position).is_some_and(|byte| !byte.is_ascii_whitespace()) {
                position += 1;
            }
            anyhow::ensure!(position > start, "truncated PPM header");
            fields.push(std::str::from_utf8(&ppm[start..position])?.to_string());
        }
        anyhow::ensure!(fields[0] == "P6", "not a binary PPM");
        anyhow::ensure!(fields[3] == "255", "not an 8-bit PPM");
        let (width, height): (usize, usize) = (fields[1].parse()?, fields[2].parse()?);
        let size = width.checked_mul(height).and_then(|pixels| pixels.checked_mul(3)).context("PPM too large")?;
        let pixels = ppm.get(position + 1..).context("no pixels")?;
        anyhow::ensure!(pixels.len() >= size && size > 0, "PPM shorter than its size");
        Ok(Self { width, height, rgb: pixels[..size].to_vec() })
    }

    /// Fraction of pixels that are not black.
    pub fn lit_fraction(&self) -> f64 {
        let lit = self.rgb.chunks_exact(3).filter(|pixel| pixel.iter().any(|&value| value > 16)).count();
        lit as f64 / (self.width * self.height) as f64
    }

    /// Writes the picture as a PNG, which every image viewer opens.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.rgb)?;
        writer.finish()?;
        Ok(())
    }
}

/// QEMU's human monitor over a Unix socket.
struct Monitor {
    stream: BufReader<UnixStream>,
}

impl Monitor {
    fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut monitor = Self { stream: BufReader::new(stream) };
        monitor.prompt()?;
        Ok(monitor)
    }

    fn prompt(&mut self) -> Result<String> {
        let mut text = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            if self.stream.read(&mut byte)? == 0 {
                bail!("the QEMU monitor closed");
            }
            text.push(byte[0]);
            if text.ends_with(b"(qemu) ") {
                return Ok(String::from_utf8_lossy(&text).into_owned());
            }
        }
    }

    fn save(&mut self, address: u64, size: u64, file: &Path) -> Result<()> {
        let command = format!("pmemsave {address:#x} {size:#x} \"{}\"\n", file.display());
        self.stream.get_mut().write_all(command.as_bytes()).context("writing to the QEMU monitor")?;
        let reply = self.prompt()?;
        if reply.contains("rror") {
            bail!("QEMU refused `{}`: {reply}", command.trim());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lit_pixels_of_a_screenshot_are_counted() {
        let mut ppm = b"P6\n4 2\n255\n".to_vec();
        ppm.extend([0u8; 3 * 6]);
        ppm.extend([200, 200, 200, 0, 0, 90]);
        assert_eq!(Picture::from_ppm(&ppm).unwrap().lit_fraction(), 0.25);
        assert!(Picture::from_ppm(b"P5\n1 1\n255\n\0").is_err());
        assert!(Picture::from_ppm(b"P6\n4 2\n255\n\0").is_err(), "too short");
        assert!(Picture::from_ppm(b"P6\n99999999999 99999999999\n255\n\0").is_err(), "absurd size");
    }

    #[test]
    fn screenshots_are_kept_as_png_with_the_same_pixels() {
        let mut ppm = b"P6 3 2 255\n".to_vec();
        let rgb: Vec<u8> = (0..18).map(|value| value * 13).collect();
        ppm.extend(&rgb);
        let picture = Picture::from_ppm(&ppm).unwrap();
        let path = std::env::temp_dir().join(format!("baton-screenshot-{}.png", std::process::id()));
        picture.write_png(&path).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut decoded = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut decoded).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (3, 2, png::ColorType::Rgb));
        assert_eq!(&decoded[..info.buffer_size()], &rgb[..]);
    }

    #[test]
    fn memory_map_lines_are_read_with_or_without_timestamps() {
        let mut command = Command::new("true");
        let scratch = std::env::temp_dir().join(format!("baton-dump-test-{}", std::process::id()));
        let mut dumper = Dumper::new(&scratch.join("dump"), &scratch, &mut command).unwrap();
        let mut sink = Vec::new();
        for line in [
            "[    0.131233] [INFO  boot]   [0x000000000000-0x00000009fc00)      639 KiB usable",
            "[    0.131678] [INFO  boot]   [0x00000009fc00-0x0000000a0000)        1 KiB reserved",
            "[INFO  boot]   [0x000000100000-0x00001ffdf000)   523132 KiB usable\r",
        ] {
            dumper.on_line(line, &mut sink).unwrap();
        }
        assert_eq!(dumper.ram, vec![(0, 0x9fc00), (0x100000, 0x1ffdf000 - 0x100000)]);
        let _ = std::fs::remove_dir_all(&scratch);
    }
}
