//! A configuration space in memory that behaves like hardware where the
//! code under test depends on it: BARs keep only the bits their size
//! allows, and read-only registers ignore writes. Loaded from recordings
//! (`pci: record` lines a testing kernel logs with `pci.record=1`).

use baton_pci::{Address, ConfigAccess};
use std::collections::BTreeMap;

/// One function: its 256 bytes of configuration space and, per BAR
/// register, what reads back after all-ones is written (the probe).
#[derive(Debug, Clone)]
pub struct FakeFunction {
    pub registers: [u32; 64],
    pub probes: [u32; 6],
}

#[derive(Debug, Clone, Default)]
pub struct FakeSegment {
    pub functions: BTreeMap<Address, FakeFunction>,
    pub writes: usize,
}

/// Which registers a test may write: command, BARs, interrupt line.
fn is_writable(offset: u16) -> bool {
    offset == 0x04 || (0x10..0x28).contains(&offset) || offset == 0x3c
}

impl ConfigAccess for FakeSegment {
    fn read(&self, at: Address, offset: u16) -> u32 {
        match self.functions.get(&at) {
            Some(function) if offset < 256 => function.registers[usize::from(offset / 4)],
            Some(_) => 0,
            None => 0xffff_ffff,
        }
    }

    fn write(&mut self, at: Address, offset: u16, value: u32) {
        self.writes += 1;
        let Some(function) = self.functions.get_mut(&at) else { return };
        if offset >= 256 || !is_writable(offset) {
            return;
        }
        let index = usize::from(offset / 4);
        if (0x10..0x28).contains(&offset) {
            let bar = usize::from((offset - 0x10) / 4);
            let probe = function.probes[bar];
            // The low flag bits of a BAR are read-only: 4 for memory, 2
            // for I/O (taken from the probe, which carries them); the upper
            // half of a 64-bit BAR has none.
            let is_upper_half = bar > 0 && function.probes[bar - 1] & 0x7 == 0x4;
            let flags = match (is_upper_half, probe & 1 != 0) {
                (true, _) => 0,
                (false, true) => 0x3,
                (false, false) => 0xf,
            };
            function.registers[index] = (value & probe & !flags) | (probe & flags);
            return;
        }
        if offset == 0x04 {
            // Status (the upper half) is write-one-to-clear: keep it.
            function.registers[index] = (function.registers[index] & 0xffff_0000) | (value & 0xffff);
            return;
        }
        function.registers[index] = value;
    }
}

/// Parses `pci: record BB:DD.F config=<512 hex digits> probes=<6 words>`
/// lines (anything else in the text is ignored).
pub fn load(text: &str) -> FakeSegment {
    let mut segment = FakeSegment::default();
    for line in text.lines() {
        let Some(rest) = line.split("pci: record ").nth(1) else { continue };
        let mut fields = rest.split_whitespace();
        let address = fields.next().expect("an address");
        let (bus, rest) = address.split_once(':').expect("bus:device.function");
        let (device, function) = rest.split_once('.').expect("device.function");
        let at = Address::new(
            u8::from_str_radix(bus, 16).unwrap(),
            u8::from_str_radix(device, 16).unwrap(),
            function.parse().unwrap(),
        )
        .unwrap();
        let mut registers = [0u32; 64];
        let mut probes = [0u32; 6];
        for field in fields {
            if let Some(hex) = field.strip_prefix("config=") {
                assert_eq!(hex.len(), 512, "256 bytes of configuration space");
                for (index, register) in registers.iter_mut().enumerate() {
                    let bytes: Vec<u8> = (0..4)
                        .map(|byte| u8::from_str_radix(&hex[(index * 4 + byte) * 2..][..2], 16).unwrap())
                        .collect();
                    *register = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                }
            } else if let Some(list) = field.strip_prefix("probes=") {
                for (probe, word) in probes.iter_mut().zip(list.split(',')) {
                    *probe = u32::from_str_radix(word, 16).unwrap();
                }
            }
        }
        segment.functions.insert(at, FakeFunction { registers, probes });
    }
    segment
}
