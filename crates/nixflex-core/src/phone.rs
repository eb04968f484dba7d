//! Phone numbers: E.164 validation with libphonenumber's metadata (the `phonenumber` crate).

/// Parses a strict E.164 number (`+` and 8–15 digits, valid for its country's numbering plan)
/// and returns it in canonical E.164 form.
///
/// Local formats (`07386…`), spaces, dashes and letters are rejected: the API takes E.164 only
/// (API.md §1.3).
pub fn parse_e164(input: &str) -> Option<String> {
    let digits = input.strip_prefix('+')?;
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.starts_with('0') {
        return None;
    }
    let parsed = phonenumber::parse(None, input).ok()?;
    if !phonenumber::is_valid(&parsed) {
        return None;
    }
    Some(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// Decodes a phone number taken from a URL path segment: `%2B` is already decoded by the router,
/// but a raw `+` arrives as a space (form decoding) or stays `+`; both are accepted (API.md §1.3).
pub fn from_path_segment(segment: &str) -> String {
    let trimmed = segment.trim_end();
    match trimmed.strip_prefix(' ') {
        Some(rest) => format!("+{}", rest.trim_start()),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_numbers_from_several_countries_are_accepted() {
        assert_eq!(parse_e164("+447446466847").as_deref(), Some("+447446466847"));
        assert_eq!(parse_e164("+14155552671").as_deref(), Some("+14155552671"));
        assert_eq!(parse_e164("+33612345678").as_deref(), Some("+33612345678"));
        assert_eq!(parse_e164("+4915112345678").as_deref(), Some("+4915112345678"));
    }

    #[test]
    fn local_formats_and_garbage_are_rejected() {
        for bad in [
            "07386172392",
            "447446466847",
            "+44 7446 466847",
            "+44-7446-466847",
            "+",
            "",
            "+0123456789",
            "+1415555267a",
            "+1234",
            "+9999999999999999",
            "+44744646684",
        ] {
            assert_eq!(parse_e164(bad), None, "{bad}");
        }
    }

    #[test]
    fn path_segments_accept_a_space_for_the_plus() {
        assert_eq!(from_path_segment(" 447446466847"), "+447446466847");
        assert_eq!(from_path_segment("+447446466847"), "+447446466847");
    }
}
