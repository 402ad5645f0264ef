//! Redis's glob patterns (KEYS, SCAN MATCH): `*`, `?`, `[abc]`, `[^a-z]`,
//! and `\` to take the next byte as it is. Written here (the pattern
//! crates match paths or Unicode text, not Redis's byte-wise rules).

/// Whether `text` matches `pattern`, byte by byte.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one star to backtrack to: linear in practice, and no
    // recursion a hostile pattern could deepen.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(_) => {
                if let Some(used) = single(&pattern[p..], text[t]) {
                    p += used;
                    t += 1;
                    continue;
                }
            }
            None => {}
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&byte| byte == b'*')
}

/// Whether the one-byte element at the start of `pattern` (not `*`)
/// matches `byte`: how many pattern bytes it took, or `None`.
fn single(pattern: &[u8], byte: u8) -> Option<usize> {
    match pattern.first()? {
        b'?' => Some(1),
        b'\\' => (pattern.get(1) == Some(&byte)).then_some(2),
        b'[' => {
            let mut index = 1;
            let negated = pattern.get(1) == Some(&b'^');
            if negated {
                index += 1;
            }
            let mut found = false;
            loop {
                match pattern.get(index) {
                    // An unclosed class matches as far as it goes.
                    None => break,
                    Some(b']') => {
                        index += 1;
                        break;
                    }
                    Some(b'\\') => {
                        found |= pattern.get(index + 1) == Some(&byte);
                        index += 2;
                    }
                    Some(&low)
                        if pattern.get(index + 1) == Some(&b'-')
                            && pattern.get(index + 2).is_some_and(|&c| c != b']') =>
                    {
                        let high = pattern[index + 2];
                        let (low, high) = if low <= high { (low, high) } else { (high, low) };
                        found |= (low..=high).contains(&byte);
                        index += 3;
                    }
                    Some(&other) => {
                        found |= other == byte;
                        index += 1;
                    }
                }
            }
            (found != negated).then_some(index)
        }
        &literal => (literal == byte).then_some(1),
    }
}
