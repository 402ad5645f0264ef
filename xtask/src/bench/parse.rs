//! Reading the kernel's serial output: the `update-report:` line of every
//! update, the first handover's tracking metadata and the cold boot's
//! first-service time.

use std::collections::BTreeMap;

/// The phases of the `update-report` line, in order, with their names.
pub const PHASES: [(&str, &str); 8] = [
    ("prepare_us", "services prepare"),
    ("serialise_us", "serialise"),
    ("load_us", "load image"),
    ("jump_us", "jump"),
    ("early_boot_us", "early boot"),
    ("deserialise_us", "deserialise"),
    ("seed_us", "seed allocator"),
    ("restore_us", "services restore"),
];

/// One update as the new kernel reported it: every `key=value` of its
/// `update-report` line that is a number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateFigures {
    /// The report's fields.
    pub fields: BTreeMap<String, u64>,
}

impl UpdateFigures {
    /// The field `key`, 0 when the report did not give it as a number.
    pub fn get(&self, key: &str) -> u64 {
        self.fields.get(key).copied().unwrap_or(0)
    }
}

/// Every `update-report` line of a serial log, in order.
pub fn parse_updates(output: &str) -> Vec<UpdateFigures> {
    output
        .lines()
        .filter_map(|line| line.split("update-report:").nth(1))
        .map(|report| UpdateFigures {
            fields: report
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .filter_map(|(key, value)| Some((key.to_string(), value.parse().ok()?)))
                .collect(),
        })
        .collect()
}

/// The handover's metadata as the first finalisation logged it: (chunks,
/// bitmaps, folios).
pub fn parse_tracking(output: &str) -> Option<(u64, u64, u64)> {
    // "finalised: root FDT at X (N bytes), preserved-memory-map Y (C chunks, B bitmaps), F folios, K KiB preserved"
    let line = output.lines().find_map(|line| line.split("finalised: ").nth(1))?;
    let words: Vec<&str> = line.split_whitespace().map(|word| word.trim_matches(|c| c == '(' || c == ',')).collect();
    let before = |marker: &str| {
        let position = words.iter().position(|word| word.starts_with(marker))?;
        words.get(position.checked_sub(1)?)?.parse().ok()
    };
    Some((before("chunks")?, before("bitmaps")?, before("folios")?))
}

/// The cold boot's "first service running N us after entry (via PATH)".
pub fn parse_first_service(output: &str) -> Option<(u64, String)> {
    let rest = output.lines().find_map(|line| line.split("first service running ").nth(1))?;
    let micros = rest.split_whitespace().next()?.parse().ok()?;
    let path = rest.split("(via ").nth(1)?.trim_end_matches(')').trim().to_string();
    Some((micros, path))
}

/// The median of `values` (the lower middle for an even count).
pub fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[    0.3] [INFO  boot] first service running 41234 us after entry (via pvh)
[    0.4] [INFO  kho] finalised: root FDT at 0x3d30c000 (332 bytes), preserved-memory-map 0x3d303000 (9 chunks, 15 bitmaps), 16404 folios, 81408 KiB preserved
[    0.5] [INFO  kho] update-report: generation=1 from=0.1.0 to=0.2.0 preserved_bytes=83390464 sub_fdts=5 folios=16405 bitmaps=13 blackout_cycles=5 blackout_us=209909 prepare_us=24459 restore_us=139441
[    0.9] [INFO  kho] update-report: generation=3 from=0.2.0 to=0.2.0 preserved_bytes=83390464 blackout_us=53870 restore_us=24136
[    1.0] [INFO  kho] update-report: generation=5 from=0.2.0 to=0.2.0 preserved_bytes=83390464 blackout_us=50000 restore_us=20000
[    1.1] [INFO  kho] update-report: generation=6 from=0.2.0 to=0.2.0 preserved_bytes=83390464 blackout_us=40000 restore_us=20000
";

    #[test]
    fn update_reports_are_read_field_by_field() {
        let updates = parse_updates(LOG);
        assert_eq!(updates.len(), 4);
        assert_eq!(updates[0].get("prepare_us"), 24459);
        assert_eq!(updates[0].get("folios"), 16405);
        assert_eq!(updates[0].fields.get("from"), None, "versions are not numbers");
    }

    #[test]
    fn update_report_lines_keep_only_their_numeric_fields() {
        let log = "booting\n\
                   [    2.0] [INFO  kho] update-report: generation=7 blackout_us=x copy_us=12 stray prepare_us=3\n\
                   update-report:\n";
        let updates = parse_updates(log);
        assert_eq!(updates.len(), 2, "one per update-report line, even an empty one");
        assert_eq!(
            updates[0].fields,
            [("generation".to_string(), 7), ("copy_us".into(), 12), ("prepare_us".into(), 3)].into()
        );
        assert_eq!(updates[0].get("blackout_us"), 0, "a field that is not a number reads as 0");
        assert!(updates[1].fields.is_empty());
        assert!(parse_updates("no reports here\n").is_empty());
    }

    #[test]
    fn tracking_and_cold_boot_lines_are_read() {
        assert_eq!(parse_tracking(LOG), Some((9, 15, 16404)));
        assert_eq!(parse_first_service(LOG), Some((41234, "pvh".to_string())));
        assert_eq!(parse_first_service("nothing here"), None);
    }

    #[test]
    fn the_median_is_the_lower_middle() {
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut [4, 1, 3, 2]), 2);
        assert_eq!(median(&mut []), 0);
    }
}
