//! The kernel's layering check: the modules of `kernel/src/` form one-way
//! layers, and this reads every `.rs` file there, finds each path into the
//! crate (`crate::x::..`, `super::..`, in `use` trees and in expressions),
//! and reports the edges between layers that [`RULES`] does not allow.
//!
//! A file's layer is its top-level module: `kernel/src/X.rs` and
//! `kernel/src/X/**` are layer `X`, except [`MAIN_FILES`], which are layer
//! `main`. A path `crate::X::..` goes to layer `X` when `X` is such a
//! module, to the layer of the crate-root macro `X` ([`MACROS`]), and
//! otherwise to `main` (an item of main.rs). Comments, strings and
//! character literals are skipped.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// What a layer may use besides itself.
#[derive(Debug, Clone, Copy)]
pub enum Uses {
    /// Every layer.
    Any,
    /// Only these layers.
    Only(&'static [&'static str]),
}

/// The layers and what each may use; any layer not listed may use nothing
/// but itself.
pub const RULES: &[(&str, Uses)] = &[
    ("main", Uses::Any),
    ("syscall", Uses::Only(&["update", "task", "handover", "pci", "mm", "options", "console", "ktest"])),
    ("update", Uses::Only(&["handover", "task", "pci", "mm", "options", "console", "ktest"])),
    ("handover", Uses::Only(&["mm", "options", "console", "ktest"])),
    ("task", Uses::Only(&["mm", "options", "console", "ktest"])),
    ("acpi", Uses::Only(&["mm", "options", "console", "ktest"])),
    ("pci", Uses::Only(&["mm", "options", "console", "ktest"])),
    ("mm", Uses::Only(&["options", "console", "ktest"])),
    ("ktest", Uses::Only(&["console", "options"])),
    ("console", Uses::Only(&["options"])),
    ("options", Uses::Only(&[])),
];

/// A rule inside one layer: its submodule `from` (with everything under
/// it) must not use its submodule `to`.
#[derive(Debug, Clone, Copy)]
pub struct InnerRule {
    /// The layer.
    pub layer: &'static str,
    /// The submodule that must not look at `to`.
    pub from: &'static str,
    /// The submodule `from` must not use.
    pub to: &'static str,
}

/// Incoming may use outgoing, never the reverse.
pub const INNER_RULES: &[InnerRule] = &[InnerRule { layer: "handover", from: "outgoing", to: "incoming" }];

/// Files (and directories) of `kernel/src/` that belong to layer `main`.
pub const MAIN_FILES: [&str; 3] = ["main", "trap", "tests"];

/// Macros exported at the crate root, and the layer defining each.
pub const MACROS: [(&str, &str); 4] =
    [("println", "console"), ("check", "ktest"), ("check_eq", "ktest"), ("kernel_test", "ktest")];

/// A use of one layer by another that the rules forbid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file, relative to `kernel/src/`.
    pub file: PathBuf,
    /// Its line (1-based).
    pub line: usize,
    /// The layer (or `layer::module`) of the file.
    pub from: String,
    /// The layer (or `layer::module`) used.
    pub to: String,
    /// The path as resolved from the crate root (`crate::a::b`).
    pub path: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel/src/{}:{}: {} -> {} ({})", self.file.display(), self.line, self.from, self.to, self.path)
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Uses between different layers: (from, to) and how many.
    pub edges: BTreeMap<(String, String), usize>,
    /// Every forbidden use, by file and line.
    pub violations: Vec<Violation>,
}

fn is_allowed(from: &str, to: &str) -> bool {
    from == to
        || RULES.iter().any(|(layer, uses)| {
            *layer == from
                && match uses {
                    Uses::Any => true,
                    Uses::Only(layers) => layers.contains(&to),
                }
        })
}

/// The layer of the top-level module (or crate-root item) `name`.
fn layer_of_name(source_root: &Path, name: &str) -> String {
    let is_module = source_root.join(format!("{name}.rs")).is_file() || source_root.join(name).is_dir();
    if is_module && MAIN_FILES.contains(&name) {
        "main".into()
    } else if is_module {
        name.into()
    } else if let Some((_, layer)) = MACROS.iter().find(|(macro_name, _)| *macro_name == name) {
        (*layer).into()
    } else {
        "main".into()
    }
}

/// The module path of a file relative to `kernel/src/` (`mm/heap.rs` is
/// `[mm, heap]`, `mm/mod.rs` and `mm.rs` are `[mm]`, `main.rs` is `[]`).
fn module_path(file: &Path) -> Vec<String> {
    let mut path: Vec<String> =
        file.with_extension("").components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
    if path.last().is_some_and(|last| last == "mod") || path == ["main"] {
        path.pop();
    }
    path
}

/// Checks every `.rs` file under `source_root` (a kernel's `src/`).
pub fn check(source_root: &Path) -> Result<Report> {
    let mut files = Vec::new();
    collect_files(source_root, &mut files)?;
    files.sort();
    let mut report = Report::default();
    for path in files {
        let relative = path.strip_prefix(source_root).context("file outside the source root")?.to_path_buf();
        let source = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let file_module = module_path(&relative);
        let from = match relative.components().next() {
            Some(first) => {
                let first = first.as_os_str().to_string_lossy();
                let name = first.strip_suffix(".rs").unwrap_or(&first);
                if MAIN_FILES.contains(&name) { "main".to_string() } else { name.to_string() }
            }
            None => continue,
        };
        for found in crate_paths(&source, &file_module) {
            let Some(first) = found.path.first() else { continue };
            let to = layer_of_name(source_root, first);
            let text = format!("crate::{}", found.path.join("::"));
            if from != to {
                *report.edges.entry((from.clone(), to.clone())).or_insert(0) += 1;
            }
            if !is_allowed(&from, &to) {
                report.violations.push(Violation {
                    file: relative.clone(),
                    line: found.line,
                    from: from.clone(),
                    to: to.clone(),
                    path: text.clone(),
                });
            }
            for rule in INNER_RULES {
                if found.module.starts_with(&[rule.layer.to_string(), rule.from.to_string()])
                    && found.path.starts_with(&[rule.layer.to_string(), rule.to.to_string()])
                {
                    report.violations.push(Violation {
                        file: relative.clone(),
                        line: found.line,
                        from: format!("{}::{}", rule.layer, rule.from),
                        to: format!("{}::{}", rule.layer, rule.to),
                        path: text.clone(),
                    });
                }
            }
        }
    }
    Ok(report)
}

fn collect_files(directory: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(directory).with_context(|| format!("reading {}", directory.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// `cargo xtask lint` (and `--layers`): prints the graph and every
/// forbidden edge of the kernel under `workspace`; fails on one only once
/// the kernel has been restructured into layers.
pub fn run(workspace: &Path) -> Result<()> {
    check_and_print(&workspace.join("kernel/src"))
}

fn check_and_print(source_root: &Path) -> Result<()> {
    let report = check(source_root)?;
    println!("layers: imports between the kernel's layers (kernel/src)");
    for ((from, to), uses) in &report.edges {
        println!("  {from} -> {to} ({uses} use{})", if *uses == 1 { "" } else { "s" });
    }
    if report.violations.is_empty() {
        println!("layers: every import follows the layering rules");
        return Ok(());
    }
    println!("layers: {} forbidden import(s):", report.violations.len());
    for violation in &report.violations {
        println!("  {violation}");
    }
    bail!("{} import(s) break the kernel's layering rules (xtask/src/lint/layers.rs)", report.violations.len())
}

/// One path into the crate found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FoundPath {
    /// The path from the crate root, without `crate` (`[mm, allocate]`).
    path: Vec<String>,
    /// The module the path was written in (the file's, and any inline
    /// `mod name { .. }` around it).
    module: Vec<String>,
    /// The line it starts on.
    line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSeparator,
    Open,
    Close,
    Comma,
    Semicolon,
    Star,
    Other,
}

#[derive(Debug, Clone)]
struct Spanned {
    token: Token,
    line: usize,
}

/// Reads source text a character at a time, counting lines.
struct Scanner {
    chars: Vec<char>,
    index: usize,
    line: usize,
}

impl Scanner {
    /// The character `offset` places ahead ('\0' past the end).
    fn peek(&self, offset: usize) -> char {
        self.chars.get(self.index + offset).copied().unwrap_or('\0')
    }

    fn is_done(&self) -> bool {
        self.index >= self.chars.len()
    }

    /// Moves one character on.
    fn bump(&mut self) {
        if self.peek(0) == '\n' {
            self.line += 1;
        }
        self.index += 1;
    }

    /// Moves on while `keep` holds for the current character.
    fn bump_while(&mut self, keep: impl Fn(char) -> bool) {
        while !self.is_done() && keep(self.peek(0)) {
            self.bump();
        }
    }

    /// Skips a `/* .. */` comment, nested ones included.
    fn skip_block_comment(&mut self) {
        let mut depth = 0;
        while !self.is_done() {
            if self.peek(0) == '/' && self.peek(1) == '*' {
                depth += 1;
                self.index += 2;
            } else if self.peek(0) == '*' && self.peek(1) == '/' {
                depth -= 1;
                self.index += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// Skips a literal from its opening `quote` to its closing one,
    /// honouring backslash escapes.
    fn skip_quoted(&mut self, quote: char) {
        self.bump();
        while !self.is_done() && self.peek(0) != quote {
            if self.peek(0) == '\\' {
                self.bump();
            }
            self.bump();
        }
        self.bump();
    }

    /// A character literal, or a lifetime or label (only its quote).
    fn skip_quote(&mut self) {
        if self.peek(1) == '\\' {
            self.skip_quoted('\'');
        } else if self.peek(2) == '\'' {
            self.index += 3;
        } else {
            self.index += 1;
        }
    }

    /// For `r"`, `r#"`, `br"`, `br#"` here: how many `#` close it, and how
    /// far ahead its opening quote is.
    fn raw_string_start(&self) -> Option<(usize, usize)> {
        let mut offset = usize::from(self.peek(0) == 'b');
        if self.peek(offset) != 'r' {
            return None;
        }
        offset += 1;
        let hashes = (offset..).take_while(|&ahead| self.peek(ahead) == '#').count();
        (self.peek(offset + hashes) == '"').then_some((hashes, offset + hashes))
    }

    /// Skips a raw string that [`Scanner::raw_string_start`] found.
    fn skip_raw_string(&mut self, hashes: usize, quote: usize) {
        self.index += quote + 1;
        let is_end = |scanner: &Self| scanner.peek(0) == '"' && (1..=hashes).all(|ahead| scanner.peek(ahead) == '#');
        while !self.is_done() && !is_end(self) {
            self.bump();
        }
        self.index += 1 + hashes;
    }
}

/// Splits Rust source into the tokens that matter for paths, skipping
/// comments (line, doc and nested block comments), strings (plain, byte and
/// raw) and character literals.
fn tokenize(source: &str) -> Vec<Spanned> {
    let mut scanner = Scanner { chars: source.chars().collect(), index: 0, line: 1 };
    let mut tokens = Vec::new();
    while !scanner.is_done() {
        let c = scanner.peek(0);
        let line = scanner.line;
        if c.is_whitespace() {
            scanner.bump();
        } else if c == '/' && scanner.peek(1) == '/' {
            scanner.bump_while(|c| c != '\n');
        } else if c == '/' && scanner.peek(1) == '*' {
            scanner.skip_block_comment();
        } else if c == '"' {
            scanner.skip_quoted('"');
        } else if c == '\'' {
            scanner.skip_quote();
        } else if let Some((hashes, quote)) = scanner.raw_string_start() {
            scanner.skip_raw_string(hashes, quote);
        } else if c == 'b' && (scanner.peek(1) == '"' || scanner.peek(1) == '\'') {
            // A byte string or byte: the quote comes next.
            scanner.index += 1;
        } else if c == 'r' && scanner.peek(1) == '#' && (scanner.peek(2).is_alphabetic() || scanner.peek(2) == '_') {
            // A raw identifier: read it without its `r#`.
            scanner.index += 2;
        } else if c.is_alphabetic() || c == '_' {
            let start = scanner.index;
            scanner.bump_while(|c| c.is_alphanumeric() || c == '_');
            let name = scanner.chars[start..scanner.index].iter().collect();
            tokens.push(Spanned { token: Token::Ident(name), line });
        } else if c.is_ascii_digit() {
            scanner.bump_while(|c| c.is_alphanumeric() || c == '_');
            tokens.push(Spanned { token: Token::Other, line });
        } else {
            let token = match c {
                ':' if scanner.peek(1) == ':' => {
                    scanner.index += 1;
                    Token::PathSeparator
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                ';' => Token::Semicolon,
                '*' => Token::Star,
                _ => Token::Other,
            };
            scanner.index += 1;
            tokens.push(Spanned { token, line });
        }
    }
    tokens
}

fn ident(tokens: &[Spanned], index: usize) -> Option<&str> {
    match tokens.get(index).map(|spanned| &spanned.token) {
        Some(Token::Ident(name)) => Some(name),
        _ => None,
    }
}

fn is(tokens: &[Spanned], index: usize, token: &Token) -> bool {
    tokens.get(index).is_some_and(|spanned| spanned.token == *token)
}

/// Parses a `use` tree from `*index`, pushing every path it names (with
/// `prefix` in front) and the line its last part starts on.
fn parse_use_tree(tokens: &[Spanned], index: &mut usize, prefix: &[String], out: &mut Vec<(Vec<String>, usize)>) {
    let mut path = prefix.to_vec();
    let line = tokens.get(*index).map_or(0, |spanned| spanned.line);
    loop {
        match tokens.get(*index).map(|spanned| &spanned.token) {
            Some(Token::PathSeparator) => *index += 1,
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                *index += 1;
                if is(tokens, *index, &Token::PathSeparator) {
                    *index += 1;
                    continue;
                }
                if ident(tokens, *index) == Some("as") {
                    *index += 2;
                }
                out.push((path, line));
                return;
            }
            Some(Token::Star) => {
                *index += 1;
                path.push("*".into());
                out.push((path, line));
                return;
            }
            Some(Token::Open) => {
                *index += 1;
                loop {
                    if is(tokens, *index, &Token::Close) {
                        *index += 1;
                        return;
                    }
                    let before = *index;
                    parse_use_tree(tokens, index, &path, out);
                    if is(tokens, *index, &Token::Comma) {
                        *index += 1;
                    } else if *index == before || !is(tokens, *index, &Token::Close) {
                        return;
                    }
                }
            }
            _ => return,
        }
    }
}

/// Resolves a path written in `module` to one from the crate root:
/// `crate::..`, `super::..` and `self::..` paths; None for any other (an
/// external crate or a name in scope).
fn resolve(path: &[String], module: &[String]) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut resolved = match first.as_str() {
        "crate" => rest.to_vec(),
        "self" => [module, rest].concat(),
        "super" => {
            let mut base = module.to_vec();
            base.pop()?;
            let mut rest = rest;
            while let Some(after) = rest.strip_prefix(&["super".to_string()]) {
                base.pop()?;
                rest = after;
            }
            [base.as_slice(), rest].concat()
        }
        _ => return None,
    };
    // `use crate::mm::{self, ..}` names crate::mm.
    if resolved.last().is_some_and(|last| last == "self") {
        resolved.pop();
    }
    (!resolved.is_empty()).then_some(resolved)
}

/// Every path into the crate in `source`, a file of module `file_module`.
fn crate_paths(source: &str, file_module: &[String]) -> Vec<FoundPath> {
    let tokens = tokenize(source);
    let mut found = Vec::new();
    // Inline modules around the current token: (name, brace depth of its
    // body).
    let mut inline_modules: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut index = 0;
    while index < tokens.len() {
        let module: Vec<String> =
            file_module.iter().cloned().chain(inline_modules.iter().map(|(name, _)| name.clone())).collect();
        match &tokens[index].token {
            Token::Ident(keyword) if keyword == "use" => {
                index += 1;
                let mut paths = Vec::new();
                parse_use_tree(&tokens, &mut index, &[], &mut paths);
                for (path, line) in paths {
                    if let Some(path) = resolve(&path, &module) {
                        found.push(FoundPath { path, module: module.clone(), line });
                    }
                }
                while index < tokens.len() && !is(&tokens, index, &Token::Semicolon) {
                    index += 1;
                }
            }
            Token::Ident(keyword)
                if keyword == "mod" && ident(&tokens, index + 1).is_some() && is(&tokens, index + 2, &Token::Open) =>
            {
                depth += 1;
                inline_modules.push((ident(&tokens, index + 1).unwrap_or_default().to_string(), depth));
                index += 2;
            }
            Token::Ident(start)
                if (start == "crate" || start == "super")
                    && is(&tokens, index + 1, &Token::PathSeparator)
                    && (index == 0 || !is(&tokens, index - 1, &Token::PathSeparator)) =>
            {
                let line = tokens[index].line;
                let mut path = vec![start.clone()];
                while is(&tokens, index + 1, &Token::PathSeparator)
                    && let Some(name) = ident(&tokens, index + 2)
                {
                    path.push(name.to_string());
                    index += 2;
                }
                if let Some(path) = resolve(&path, &module) {
                    found.push(FoundPath { path, module, line });
                }
            }
            Token::Open => depth += 1,
            Token::Close => {
                if inline_modules.last().is_some_and(|&(_, body)| body == depth) {
                    inline_modules.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        index += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel source tree in a fresh temporary directory, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str, files: &[(&str, &str)]) -> Self {
            let root = std::env::temp_dir().join(format!("baton-layers-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for (path, text) in files {
                let path = root.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            Tree(root)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const BASE: [(&str, &str); 7] = [
        ("main.rs", "mod mm;\nmod task;\nmod handover;\nuse crate::task::Tasks;\npub fn command_line_value() {}\n"),
        ("options.rs", "pub fn value() {}\n"),
        ("console.rs", "use crate::options;\n"),
        ("ktest.rs", "crate::println!(\"x\");\n"),
        ("mm/mod.rs", "pub mod direct_map;\npub fn allocate() {}\n"),
        ("mm/direct_map.rs", "use super::allocate;\n"),
        ("task/mod.rs", "use crate::mm::allocate;\nuse crate::options::value;\n"),
    ];

    fn tree(name: &str, extra: &[(&str, &str)]) -> Tree {
        let files: Vec<(&str, &str)> = BASE.iter().copied().chain(extra.iter().copied()).collect();
        Tree::new(name, &files)
    }

    fn edge(report: &Report, from: &str, to: &str) -> Option<usize> {
        report.edges.get(&(from.to_string(), to.to_string())).copied()
    }

    #[test]
    fn allowed_edges_pass() {
        let tree = tree("allowed", &[]);
        let report = check(&tree.0).unwrap();
        assert_eq!(report.violations, [], "{report:?}");
        assert_eq!(edge(&report, "task", "mm"), Some(1));
        assert_eq!(edge(&report, "task", "options"), Some(1));
        assert_eq!(edge(&report, "main", "task"), Some(1));
        assert_eq!(edge(&report, "ktest", "console"), Some(1), "crate::println! belongs to console");
        assert_eq!(edge(&report, "mm", "mm"), None, "a layer's use of itself is no edge");
    }

    #[test]
    fn back_edges_fail_naming_file_and_line() {
        let tree = tree(
            "back",
            &[
                ("handover/mod.rs", "pub mod x;\n"),
                ("handover/x.rs", "//! Handover things.\nuse crate::task::Tasks;\n"),
                ("update.rs", "pub fn pending() {}\n"),
                (
                    "mm/heap.rs",
                    "fn grow() {\n    let _ = crate::update::pending();\n    crate::command_line_value();\n}\n",
                ),
            ],
        );
        let report = check(&tree.0).unwrap();
        let lines: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "kernel/src/handover/x.rs:2: handover -> task (crate::task::Tasks)",
                "kernel/src/mm/heap.rs:2: mm -> update (crate::update::pending)",
                "kernel/src/mm/heap.rs:3: mm -> main (crate::command_line_value)",
            ]
        );
    }

    #[test]
    fn grouped_and_nested_uses_give_every_edge() {
        let tree = tree(
            "grouped",
            &[(
                "update.rs",
                "use crate::{\n    mm::{self, direct_map},\n    task,\n};\nuse crate::{options::{value as v}, console::*};\n",
            )],
        );
        let report = check(&tree.0).unwrap();
        assert_eq!(report.violations, []);
        assert_eq!(edge(&report, "update", "mm"), Some(2));
        assert_eq!(edge(&report, "update", "task"), Some(1));
        assert_eq!(edge(&report, "update", "options"), Some(1));
        assert_eq!(edge(&report, "update", "console"), Some(1));
        let found = crate_paths("use crate::{mm::{self, direct_map}, task};", &["update".into()]);
        let paths: Vec<String> = found.iter().map(|found| found.path.join("::")).collect();
        assert_eq!(paths, ["mm", "mm::direct_map", "task"]);
    }

    #[test]
    fn comments_strings_and_inline_modules_are_not_uses() {
        let source = "//! crate::task is not used\n\
                      /// Calls crate::update::run.\n\
                      // use crate::task::Tasks;\n\
                      /* crate::task /* nested crate::update */ still a comment crate::task */\n\
                      const NAME: &str = \"crate::task::x\";\n\
                      const RAW: &str = r#\"crate::update\"#;\n\
                      const QUOTE: char = '\"';\n\
                      fn f<'a>(_: &'a str) -> char { '\\'' }\n\
                      mod tests {\n    use super::*;\n    fn t() { super::allocate(); }\n}\n";
        let tree = tree("comments", &[("mm/heap.rs", source)]);
        let report = check(&tree.0).unwrap();
        assert_eq!(report.violations, [], "{report:?}");
        let found = crate_paths(source, &["mm".into(), "heap".into()]);
        let paths: Vec<String> = found.iter().map(|found| found.path.join("::")).collect();
        assert_eq!(paths, ["mm::heap::*", "mm::heap::allocate"], "super:: inside `mod tests` is the file's module");
    }

    #[test]
    fn lines_are_counted_through_multiline_literals_and_comments() {
        let source = "const A: &str = \"one\ntwo crate::task\";\n\
                      const B: &[u8] = br#\"crate::task\n\" crate::task\"#;\n\
                      /* crate::task\n */ const C: u8 = b'\\'';\n\
                      fn f() { r#crate_like(); crate::update::run(); }\n";
        let found = crate_paths(source, &["mm".into()]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].path.join("::"), found[0].line), ("update::run".to_string(), 7));
    }

    #[test]
    fn outgoing_must_not_use_incoming() {
        let tree = tree(
            "outgoing",
            &[
                ("handover/mod.rs", "pub mod incoming;\npub mod outgoing;\n"),
                ("handover/incoming.rs", "use super::outgoing::Record;\nuse crate::handover::outgoing;\n"),
                (
                    "handover/outgoing.rs",
                    "use super::incoming::Claim;\nfn f() {\n    crate::handover::incoming::claim();\n}\n",
                ),
                ("handover/outgoing/chunks.rs", "use crate::handover::{incoming::Claim, outgoing};\n"),
            ],
        );
        let report = check(&tree.0).unwrap();
        let lines: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "kernel/src/handover/outgoing/chunks.rs:1: handover::outgoing -> handover::incoming \
                 (crate::handover::incoming::Claim)",
                "kernel/src/handover/outgoing.rs:1: handover::outgoing -> handover::incoming \
                 (crate::handover::incoming::Claim)",
                "kernel/src/handover/outgoing.rs:3: handover::outgoing -> handover::incoming \
                 (crate::handover::incoming::claim)",
            ]
        );
    }

    #[test]
    fn a_forbidden_edge_fails_the_check() {
        let broken = tree("enforced", &[("mm/heap.rs", "use crate::task::Tasks;\n")]);
        let error = check_and_print(&broken.0).unwrap_err();
        assert!(format!("{error:#}").contains("1 import(s) break the kernel's layering rules"), "{error:#}");
        let clean = tree("clean", &[]);
        check_and_print(&clean.0).unwrap();
    }

    #[test]
    fn the_rule_table_is_consistent() {
        for (layer, uses) in RULES {
            assert_eq!(RULES.iter().filter(|(other, _)| other == layer).count(), 1, "{layer} listed twice");
            if let Uses::Only(layers) = uses {
                for used in *layers {
                    assert!(RULES.iter().any(|(other, _)| other == used), "{layer} uses unknown {used}");
                }
            }
        }
        assert!(is_allowed("main", "options") && is_allowed("syscall", "update") && is_allowed("mm", "mm"));
        assert!(!is_allowed("options", "console") && !is_allowed("handover", "task") && !is_allowed("kexec", "mm"));
    }

    #[test]
    fn files_map_to_modules() {
        assert_eq!(module_path(Path::new("main.rs")), Vec::<String>::new());
        assert_eq!(module_path(Path::new("mm/mod.rs")), ["mm"]);
        assert_eq!(module_path(Path::new("mm/heap.rs")), ["mm", "heap"]);
        assert_eq!(module_path(Path::new("handover/outgoing/chunks.rs")), ["handover", "outgoing", "chunks"]);
    }
}
