//! Finds the JSON objects in a sloppy callback file (JSON lines, an array, pretty-printed
//! objects, missing commas) so that one bad record never hides the good ones around it.

/// One top-level object found in the input, or a stretch that could not be one.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece<'a> {
    /// 1-based line where the piece starts.
    pub line: usize,
    pub text: &'a str,
    /// Why the piece is not a complete object, when it is not.
    pub broken: Option<&'static str>,
}

/// Splits `input` into its top-level objects. Brackets outside objects are passed over, so
/// `[{..},{..}]` yields its elements (also when a large array is read in several chunks).
/// Text that is not inside an object becomes a broken piece of its own line.
pub fn split_objects(input: &str) -> Vec<Piece<'_>> {
    let bytes = input.as_bytes();
    let mut pieces = Vec::new();
    let mut line = 1usize;
    let mut i = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\n' => line += 1,
            b' ' | b'\t' | b'\r' | b',' | b'[' | b']' => {}
            0xEF if input[i..].starts_with('\u{feff}') => {
                i += 3;
                continue;
            }
            b'{' => {
                let (end, lines, broken) = scan_object(bytes, i);
                pieces.push(Piece {
                    line,
                    text: &input[i..end],
                    broken,
                });
                line += lines;
                i = end;
                continue;
            }
            _ => {
                // Junk outside any object: report it once for its line, skip the line.
                let end = input[i..].find('\n').map_or(bytes.len(), |n| i + n);
                pieces.push(Piece {
                    line,
                    text: input[i..end].trim_end(),
                    broken: Some("not a JSON object"),
                });
                i = end;
                continue;
            }
        }
        i += 1;
    }
    pieces
}

/// Scans one object starting at `start` (a `{`). Returns its end (exclusive), the number of
/// newlines inside it and why it is broken, if it is.
fn scan_object(bytes: &[u8], start: usize) -> (usize, usize, Option<&'static str>) {
    // The brackets still open, innermost last.
    let mut open: Vec<u8> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut newlines = 0usize;
    let mut last_significant = b'{';
    let mut at_line_start = false;
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                // JSON strings hold no raw line break, escaped or not.
                b'\n' => return (i, newlines, Some("unterminated string")),
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'\n' => {
                newlines += 1;
                at_line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'{' if open.len() == 1
                && at_line_start
                && !matches!(last_significant, b':' | b'[' | b',') =>
            {
                // A new record starts where this one should have continued: it was cut off.
                return (i, newlines, Some("unterminated object"));
            }
            b'{' | b'[' => open.push(b),
            b'}' | b']' => {
                let opener = if b == b'}' { b'{' } else { b'[' };
                if open.pop() != Some(opener) {
                    return (i + 1, newlines, Some("mismatched brackets"));
                }
                if open.is_empty() {
                    return (i + 1, newlines, None);
                }
            }
            b'"' => in_string = true,
            _ => {}
        }
        at_line_start = false;
        last_significant = b;
        i += 1;
    }
    (bytes.len(), newlines, Some("unterminated object"))
}

/// Mends the two mistakes a sloppy JSON writer makes most: a missing comma between two
/// members or elements, and a trailing comma before `}` or `]`. Strings are left untouched.
pub fn repair(text: &str) -> String {
    let mut repair = Repair {
        out: String::with_capacity(text.len() + 16),
        ..Repair::default()
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if repair.in_string {
            repair.string_char(c);
        } else if c.is_whitespace() {
            repair.space(c);
        } else {
            repair.release_comma(c);
            repair.token(c, &mut chars);
        }
    }
    repair.finish()
}

/// Where [`repair`] is in the text, and what it has written.
#[derive(Default)]
struct Repair {
    out: String,
    in_string: bool,
    escaped: bool,
    /// Whether the last significant thing emitted ended a value.
    after_value: bool,
    /// Whether the string being read is an object key (it follows `{` or `,`).
    string_is_key: bool,
    expect_key: bool,
    pending_comma: bool,
    /// White space read after a held-back comma, written after it.
    held: String,
}

impl Repair {
    /// A character inside a string: copied; an unescaped quote ends the string.
    fn string_char(&mut self, c: char) {
        self.out.push(c);
        match c {
            _ if self.escaped => self.escaped = false,
            '\\' => self.escaped = true,
            '"' => {
                self.in_string = false;
                self.after_value = !self.string_is_key;
            }
            _ => {}
        }
    }

    /// White space: copied, or held behind a held-back comma.
    fn space(&mut self, c: char) {
        if self.pending_comma {
            self.held.push(c);
        } else {
            self.out.push(c);
        }
    }

    /// Writes the held-back comma (unless `next` closes a bracket: a trailing comma is
    /// dropped) and the white space after it.
    fn release_comma(&mut self, next: char) {
        if self.pending_comma {
            self.pending_comma = false;
            if next != '}' && next != ']' {
                self.out.push(',');
            }
            self.out.push_str(&self.held);
            self.held.clear();
        }
    }

    /// Writes the token starting with `c` (the rest of a number or literal is read from
    /// `chars`), after a comma when it starts a value right after another value.
    fn token(&mut self, c: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
        let starts_value =
            c == '"' || c == '{' || c == '[' || c == '-' || c.is_ascii_alphanumeric();
        if self.after_value && starts_value {
            self.out.push(',');
            self.expect_key = true;
        }
        match c {
            '"' => {
                self.in_string = true;
                self.string_is_key = self.expect_key;
                self.expect_key = false;
                self.after_value = false;
            }
            '{' => {
                self.expect_key = true;
                self.after_value = false;
            }
            '[' => {
                self.expect_key = false;
                self.after_value = false;
            }
            '}' | ']' => self.after_value = true,
            ',' => {
                // Hold the comma back: dropped if a closing bracket follows.
                self.pending_comma = true;
                self.expect_key = true;
                self.after_value = false;
                return;
            }
            ':' => {
                self.expect_key = false;
                self.after_value = false;
            }
            _ => {
                // A number or literal: consume it whole.
                self.out.push(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || matches!(n, '.' | '+' | '-') {
                        self.out.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                self.after_value = true;
                return;
            }
        }
        self.out.push(c);
    }

    /// The mended text; a comma still held back at the end is written.
    fn finish(mut self) -> String {
        if self.pending_comma {
            self.out.push(',');
            self.out.push_str(&self.held);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_json_lines_arrays_and_pretty_objects() {
        let input = "{\"a\":1}\n[{\"b\":2},\n {\"c\":\n 3}]\n{\"d\":4}";
        let pieces = split_objects(input);
        let texts: Vec<_> = pieces.iter().map(|p| p.text).collect();
        assert_eq!(
            texts,
            ["{\"a\":1}", "{\"b\":2}", "{\"c\":\n 3}", "{\"d\":4}"]
        );
        let lines: Vec<_> = pieces.iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 2, 3, 5]);
        assert!(pieces.iter().all(|p| p.broken.is_none()));
    }

    #[test]
    fn mismatched_brackets_make_a_broken_piece() {
        // Found by the callback_parser fuzz target: `]` closed the object.
        let pieces = split_objects("{\r]]\n{\"a\":[1}\n{\"b\":[{}]}");
        let found: Vec<_> = pieces.iter().map(|p| (p.text, p.broken)).collect();
        assert_eq!(
            found,
            [
                ("{\r]", Some("mismatched brackets")),
                ("{\"a\":[1}", Some("mismatched brackets")),
                ("{\"b\":[{}]}", None),
            ]
        );
    }

    #[test]
    fn a_line_break_after_a_backslash_still_ends_the_string() {
        // Found by the callback_parser fuzz target: the escaped line break went uncounted,
        // so every later record was reported a line too early.
        let pieces = split_objects("{\"a\":\"x\\\n{\"b\":1}\n{\"c\":2}");
        let found: Vec<_> = pieces.iter().map(|p| (p.line, p.broken)).collect();
        assert_eq!(
            found,
            [(1, Some("unterminated string")), (2, None), (3, None)]
        );
    }

    #[test]
    fn a_cut_off_line_does_not_swallow_the_next() {
        let input = "{\"a\":\"x\n{\"b\":1, \"c\": 2\n{\"d\":3}\n";
        let pieces = split_objects(input);
        assert_eq!(pieces.len(), 3, "{pieces:?}");
        assert_eq!(pieces[0].broken, Some("unterminated string"));
        assert_eq!(pieces[1].broken, Some("unterminated object"));
        assert_eq!(
            (pieces[2].text, pieces[2].line, pieces[2].broken),
            ("{\"d\":3}", 3, None)
        );
    }

    #[test]
    fn junk_lines_are_reported_with_their_line() {
        let pieces = split_objects("{\"a\":1}\nhello world\n{\"b\":2}");
        assert_eq!(pieces[1].line, 2);
        assert_eq!(pieces[1].broken, Some("not a JSON object"));
        assert_eq!(pieces[2].text, "{\"b\":2}");
    }

    #[test]
    fn repairs_missing_and_trailing_commas_only_outside_strings() {
        let sloppy = "{\n\"extnumber\": \"7003\"\n\"uuid\": \"a b\"\n\"userkey\":1\n\"x\": [1 2,],\n\"s\": \"q\\\"}\" ,}";
        let fixed = repair(sloppy);
        let v: serde_json::Value = serde_json::from_str(&fixed).expect(&fixed);
        assert_eq!(v["extnumber"], "7003");
        assert_eq!(v["uuid"], "a b");
        assert_eq!(v["userkey"], 1);
        assert_eq!(v["x"], serde_json::json!([1, 2]));
        assert_eq!(v["s"], "q\"}");
    }

    #[test]
    fn valid_json_is_unchanged_by_repair() {
        let ok = r#"{"a": [1, {"b": null}], "c": "d,}", "e": -1.5e3, "f": true}"#;
        assert_eq!(repair(ok), ok);
    }
}
