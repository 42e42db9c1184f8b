//! The import manifest: one row per certificate to import, as CSV (with a
//! header) or JSON lines, parsed strictly. A manifest is untrusted input:
//! every field is checked here against AWS IoT's rules, and a row that does
//! not parse is an error naming its line and field, while the other rows
//! still parse.
//!
//! CSV: a header naming the columns (`certificate`, required; `thingName`,
//! `profile`, `attributes`, optional; no others), then one row per line.
//! Fields may be double-quoted (`""` is a quote inside one). `attributes` is
//! `key=value` pairs separated by `;`. JSON lines: one object per line with
//! the same keys (`attributes` an object of strings), unknown keys refused.
//! Blank lines and lines starting with `#` are skipped in both.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::naming::{
    is_valid_attribute_key, is_valid_attribute_value, is_valid_resource_name, is_valid_thing_name,
};

/// The longest certificate path a row may give.
pub const PATH_MAX: usize = 4096;

/// How a manifest is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Csv,
    JsonLines,
}

impl ManifestFormat {
    /// By the file name's extension (`.csv`; `.jsonl`, `.ndjson`, `.json`),
    /// otherwise by the first character that is not blank (`{`: JSON lines).
    pub fn detect(file_name: &str, text: &str) -> Self {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            return Self::Csv;
        }
        if [".jsonl", ".ndjson", ".json"].iter().any(|ext| lower.ends_with(ext)) {
            return Self::JsonLines;
        }
        match text.trim_start().starts_with('{') {
            true => Self::JsonLines,
            false => Self::Csv,
        }
    }
}

/// One certificate to import, as the manifest gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestRow {
    /// 1-based line in the manifest.
    pub line: usize,
    /// The certificate's file, as written (relative paths are relative to
    /// the manifest's directory: the caller resolves them).
    pub certificate: String,
    pub thing_name: Option<String>,
    pub profile: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

/// A row that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, field {field}: {problem}")]
pub struct ManifestError {
    pub line: usize,
    pub field: String,
    pub problem: String,
}

impl ManifestError {
    fn new(line: usize, field: &str, problem: impl Into<String>) -> Self {
        Self {
            line,
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// A manifest as a whole that cannot be read (its CSV header).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest header (line {line}): {problem}")]
pub struct ManifestHeaderError {
    pub line: usize,
    pub problem: String,
}

const COLUMNS: [&str; 4] = ["certificate", "thingName", "profile", "attributes"];

/// Parses a manifest: each row, or its error; only a CSV header that does
/// not parse fails the whole manifest.
///
/// # Errors
/// [`ManifestHeaderError`] for a CSV manifest without a valid header.
pub fn parse_manifest(
    text: &str,
    format: ManifestFormat,
) -> Result<Vec<Result<ManifestRow, ManifestError>>, ManifestHeaderError> {
    let lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    match format {
        ManifestFormat::JsonLines => Ok(lines.map(|(n, l)| json_row(n, l)).collect()),
        ManifestFormat::Csv => {
            let mut lines = lines;
            let Some((header_line, header)) = lines.next() else {
                return Ok(Vec::new());
            };
            let columns = csv_fields(header).map_err(|problem| ManifestHeaderError {
                line: header_line,
                problem,
            })?;
            let mut seen = Vec::new();
            for column in &columns {
                let column = column.trim();
                if !COLUMNS.contains(&column) {
                    return Err(ManifestHeaderError {
                        line: header_line,
                        problem: format!("unknown column {column:?}; the columns are {}", COLUMNS.join(", ")),
                    });
                }
                if seen.contains(&column) {
                    return Err(ManifestHeaderError {
                        line: header_line,
                        problem: format!("column {column:?} appears twice"),
                    });
                }
                seen.push(column);
            }
            if !seen.contains(&"certificate") {
                return Err(ManifestHeaderError {
                    line: header_line,
                    problem: "no certificate column".into(),
                });
            }
            Ok(lines.map(|(n, l)| csv_row(n, l, &seen)).collect())
        }
    }
}

fn csv_row(line: usize, text: &str, columns: &[&str]) -> Result<ManifestRow, ManifestError> {
    let fields = csv_fields(text).map_err(|problem| ManifestError::new(line, "(row)", problem))?;
    if fields.len() != columns.len() {
        return Err(ManifestError::new(
            line,
            "(row)",
            format!("{} fields, the header has {}", fields.len(), columns.len()),
        ));
    }
    let mut raw = RawRow::default();
    for (column, value) in columns.iter().zip(fields) {
        let value = (!value.is_empty()).then_some(value);
        match *column {
            "certificate" => raw.certificate = value,
            "thingName" => raw.thing_name = value,
            "profile" => raw.profile = value,
            _ => {
                let mut attributes = BTreeMap::new();
                for pair in value
                    .as_deref()
                    .unwrap_or_default()
                    .split(';')
                    .filter(|p| !p.is_empty())
                {
                    let Some((key, value)) = pair.split_once('=') else {
                        return Err(ManifestError::new(
                            line,
                            "attributes",
                            format!("{:?} is not key=value", clip(pair)),
                        ));
                    };
                    if attributes.insert(key.to_string(), value.to_string()).is_some() {
                        return Err(ManifestError::new(
                            line,
                            "attributes",
                            format!("key {:?} appears twice", clip(key)),
                        ));
                    }
                }
                raw.attributes = Some(attributes);
            }
        }
    }
    raw.validate(line)
}

/// RFC 4180 fields of one line (no line breaks inside a field).
fn csv_fields(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("{c:?} after a closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote inside an unquoted field".into()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRow {
    certificate: Option<String>,
    thing_name: Option<String>,
    profile: Option<String>,
    attributes: Option<BTreeMap<String, String>>,
}

fn json_row(line: usize, text: &str) -> Result<ManifestRow, ManifestError> {
    // serde's message names an unknown key; a mistyped one by its position.
    let raw: RawRow = serde_json::from_str(text).map_err(|e| ManifestError::new(line, "(row)", e.to_string()))?;
    raw.validate(line)
}

impl RawRow {
    fn validate(self, line: usize) -> Result<ManifestRow, ManifestError> {
        let certificate = self
            .certificate
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| ManifestError::new(line, "certificate", "missing"))?;
        if certificate.len() > PATH_MAX || certificate.chars().any(char::is_control) {
            return Err(ManifestError::new(
                line,
                "certificate",
                format!("not a usable path (control characters, or longer than {PATH_MAX} bytes)"),
            ));
        }
        let thing_name = self.thing_name.filter(|n| !n.is_empty());
        if let Some(name) = &thing_name
            && !is_valid_thing_name(name)
        {
            return Err(ManifestError::new(
                line,
                "thingName",
                format!("{:?} does not match [a-zA-Z0-9:_-]{{1,128}}", clip(name)),
            ));
        }
        let profile = self.profile.filter(|p| !p.is_empty());
        if let Some(profile) = &profile
            && !is_valid_resource_name(profile)
        {
            return Err(ManifestError::new(
                line,
                "profile",
                format!("{:?} is not a profile name", clip(profile)),
            ));
        }
        let attributes = self.attributes.unwrap_or_default();
        for (key, value) in &attributes {
            if !is_valid_attribute_key(key) {
                return Err(ManifestError::new(
                    line,
                    "attributes",
                    format!("key {:?} does not match [a-zA-Z0-9_.,@/:#-]{{1,128}}", clip(key)),
                ));
            }
            if !is_valid_attribute_value(value) {
                return Err(ManifestError::new(
                    line,
                    "attributes",
                    format!(
                        "value of {key} {:?} does not match [a-zA-Z0-9_.,@/:#=\\[\\]-]{{0,800}}",
                        clip(value)
                    ),
                ));
            }
        }
        Ok(ManifestRow {
            line,
            certificate,
            thing_name,
            profile,
            attributes,
        })
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, format: ManifestFormat) -> Vec<Result<ManifestRow, ManifestError>> {
        parse_manifest(text, format).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ok(row: &Result<ManifestRow, ManifestError>) -> &ManifestRow {
        row.as_ref().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn csv_rows_parse_with_optional_columns_and_quotes() {
        let text = "certificate,thingName,profile,attributes\n\
                    a.pem,,,\n\
                    # a comment\n\
                    \n\
                    \"dir, with comma/b.pem\",dev-2,sensors,site=paris;floor=3\r\n";
        let rows = parse(text, ManifestFormat::Csv);
        assert_eq!(rows.len(), 2);
        let a = ok(&rows[0]);
        assert_eq!((a.line, a.certificate.as_str(), &a.thing_name), (2, "a.pem", &None));
        let b = ok(&rows[1]);
        assert_eq!(b.line, 5);
        assert_eq!(b.certificate, "dir, with comma/b.pem");
        assert_eq!(b.thing_name.as_deref(), Some("dev-2"));
        assert_eq!(b.profile.as_deref(), Some("sensors"));
        assert_eq!(b.attributes.get("floor").map(String::as_str), Some("3"));
    }

    #[test]
    fn a_bad_csv_row_names_line_and_field_and_the_others_still_parse() {
        let text = "certificate,thingName,attributes\n\
                    ok.pem,dev-1,\n\
                    bad.pem,dev 2,\n\
                    ,dev-3,\n\
                    x.pem,dev-4,color\n\
                    y.pem,dev-5\n\
                    \"z.pem,dev-6,\n\
                    w.pem,dev-7,k=v;k=w\n\
                    v.pem,dev-8,k=v!\n\
                    last.pem,dev-9,\n";
        let rows = parse(text, ManifestFormat::Csv);
        let errors: Vec<(usize, String)> = rows
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| (e.line, e.field.clone()))
            .collect();
        assert_eq!(
            errors,
            vec![
                (3, "thingName".to_string()),
                (4, "certificate".to_string()),
                (5, "attributes".to_string()),
                (6, "(row)".to_string()),
                (7, "(row)".to_string()),
                (8, "attributes".to_string()),
                (9, "attributes".to_string()),
            ]
        );
        let ok: Vec<usize> = rows.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.line).collect();
        assert_eq!(ok, vec![2, 10]);
    }

    #[test]
    fn a_csv_header_must_name_known_columns_once_with_certificate() {
        for header in [
            "cert,thingName",
            "certificate,certificate",
            "thingName,profile",
            "certificate,\"x",
        ] {
            let Err(err) = parse_manifest(&format!("{header}\na.pem,b\n"), ManifestFormat::Csv) else {
                panic!("{header} parsed");
            };
            assert_eq!(err.line, 1, "{header}");
        }
        assert!(parse("", ManifestFormat::Csv).is_empty());
    }

    #[test]
    fn json_lines_parse_strictly() {
        let text = r#"{"certificate":"a.pem","thingName":"dev-1","attributes":{"site":"paris"}}
{"certificate":"b.pem","colour":"red"}
{"certificate":"c.pem","thingName":7}
not json
{"thingName":"dev-5"}
{"certificate":"f.pem","profile":"bad profile"}
{"certificate":"g.pem"}"#;
        let rows = parse(text, ManifestFormat::JsonLines);
        let a = ok(&rows[0]);
        assert_eq!(a.attributes.get("site").map(String::as_str), Some("paris"));
        let errors: Vec<(usize, &str)> = rows
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| (e.line, e.field.as_str()))
            .collect();
        assert_eq!(
            errors,
            vec![
                (2, "(row)"),
                (3, "(row)"),
                (4, "(row)"),
                (5, "certificate"),
                (6, "profile")
            ]
        );
        assert!(rows[1].as_ref().is_err_and(|e| e.problem.contains("colour")));
        assert_eq!(ok(&rows[6]).line, 7);
    }

    #[test]
    fn formats_are_detected_by_extension_then_content() {
        assert_eq!(ManifestFormat::detect("m.CSV", "{"), ManifestFormat::Csv);
        assert_eq!(
            ManifestFormat::detect("m.jsonl", "certificate"),
            ManifestFormat::JsonLines
        );
        assert_eq!(
            ManifestFormat::detect("m", "  {\"certificate\":1}"),
            ManifestFormat::JsonLines
        );
        assert_eq!(ManifestFormat::detect("m", "certificate\n"), ManifestFormat::Csv);
    }
}
