//! AWS IoT naming rules: thing names and attribute keys and values.

/// Longest thing name AWS IoT accepts.
pub const THING_NAME_MAX: usize = 128;
/// Longest attribute key.
pub const ATTRIBUTE_KEY_MAX: usize = 128;
/// Longest attribute value.
pub const ATTRIBUTE_VALUE_MAX: usize = 800;
/// Attributes allowed on a thing with a thing type.
pub const ATTRIBUTES_MAX_WITH_TYPE: usize = 50;
/// Attributes allowed on a thing without a thing type.
pub const ATTRIBUTES_MAX_WITHOUT_TYPE: usize = 3;
/// Thing groups a thing may belong to.
pub const THING_GROUPS_MAX: usize = 10;

/// `[a-zA-Z0-9:_-]{1,128}`.
pub fn is_valid_thing_name(name: &str) -> bool {
    (1..=THING_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// `[a-zA-Z0-9_.,@/:#-]{1,128}`.
pub fn is_valid_attribute_key(key: &str) -> bool {
    (1..=ATTRIBUTE_KEY_MAX).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b',' | b'@' | b'/' | b':' | b'#' | b'-'))
}

/// `[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}`.
pub fn is_valid_attribute_value(value: &str) -> bool {
    value.len() <= ATTRIBUTE_VALUE_MAX
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'.' | b',' | b'@' | b'/' | b':' | b'#' | b'=' | b'[' | b']' | b'-'
                )
        })
}

/// Names of thing types, groups and policies: `[a-zA-Z0-9:_-]{1,128}` as well
/// (policies also allow `+=.,@` which we accept too).
pub fn is_valid_resource_name(name: &str) -> bool {
    (1..=THING_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-' | b'+' | b'=' | b'.' | b',' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names() {
        assert!(is_valid_thing_name("sensor-00001"));
        assert!(is_valid_thing_name("a:b_c-D9"));
        assert!(is_valid_thing_name(&"x".repeat(128)));
        assert!(!is_valid_thing_name(&"x".repeat(129)));
        assert!(!is_valid_thing_name(""));
        assert!(!is_valid_thing_name("has space"));
        assert!(!is_valid_thing_name("has/slash"));
        assert!(!is_valid_thing_name("ünicode"));
        assert!(!is_valid_thing_name("dot.ted"));
    }

    #[test]
    fn attributes() {
        assert!(is_valid_attribute_key("org.unit/x@y#1:2,3_-"));
        assert!(!is_valid_attribute_key(""));
        assert!(!is_valid_attribute_key("sp ace"));
        assert!(!is_valid_attribute_key("eq=uals"));
        assert!(is_valid_attribute_value(""));
        assert!(is_valid_attribute_value("a=b[1]"));
        assert!(is_valid_attribute_value(&"v".repeat(800)));
        assert!(!is_valid_attribute_value(&"v".repeat(801)));
        assert!(!is_valid_attribute_value("Acme Corp"));
        assert!(!is_valid_attribute_value("quote\""));
    }
}
