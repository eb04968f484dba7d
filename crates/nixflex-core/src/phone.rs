//! Phone numbers: E.164 validation with libphonenumber's metadata (the `phonenumber` crate).

/// Parses a strict E.164 number (`+` and 7–15 digits) whose national part has a length that
/// its country's numbering plan allows, and returns it in canonical E.164 form.
///
/// Whether a number is *allocated* is not checked: libphonenumber's allocation tables lag
/// behind carriers, and a number the customer holds at Twilio is real by definition (ranges
/// such as `+1555…` and the UK's `+447700900…` drama range are well-formed and accepted).
/// Only malformed input is refused: local formats (`07386…`), spaces, dashes, letters, an unknown
/// country code, or a length no number of that country can have (docs/api.md#phone-numbers).
pub fn parse_e164(input: &str) -> Option<String> {
    let digits = input.strip_prefix('+')?;
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.starts_with('0') {
        return None;
    }
    let parsed = phonenumber::parse(None, input).ok()?;
    if !has_possible_length(&parsed) {
        return None;
    }
    Some(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// The number types whose lengths count as possible (every type but short codes and emergency
/// numbers, which are never E.164 subscriber numbers).
const POSSIBLE_TYPES: &[phonenumber::Type] = &[
    phonenumber::Type::FixedLine,
    phonenumber::Type::Mobile,
    phonenumber::Type::FixedLineOrMobile,
    phonenumber::Type::TollFree,
    phonenumber::Type::PremiumRate,
    phonenumber::Type::SharedCost,
    phonenumber::Type::PersonalNumber,
    phonenumber::Type::Voip,
    phonenumber::Type::Pager,
    phonenumber::Type::Uan,
    phonenumber::Type::Voicemail,
];

/// Whether the national number's length is one that some number of its country code can have.
fn has_possible_length(number: &phonenumber::PhoneNumber) -> bool {
    let national = number.national();
    let zeros = usize::from(national.zeros());
    let length = national.value().to_string().len() + zeros;
    let Some(regions) = phonenumber::metadata::DATABASE.by_code(&number.code().value()) else {
        return false;
    };
    // The metadata keeps possible lengths per number type (the general description's list is
    // left empty), so a length is possible when any type of any region of the code allows it.
    let length = u16::try_from(length).unwrap_or(u16::MAX);
    regions.iter().any(|meta| {
        let descriptors = meta.descriptors();
        std::iter::once(Some(descriptors.general()))
            .chain(POSSIBLE_TYPES.iter().map(|&kind| descriptors.get(kind)))
            .flatten()
            .any(|descriptor| descriptor.possible_length().contains(&length))
    })
}

/// Decodes a phone number taken from a URL path segment: `%2B` is already decoded by the router,
/// but a raw `+` arrives as a space (form decoding) or stays `+`; both are accepted (docs/api.md#phone-number-format).
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
            "+4474464668",
            "+4474464668471234",
            "+99912345678",
        ] {
            assert_eq!(parse_e164(bad), None, "{bad}");
        }
    }

    #[test]
    fn well_formed_numbers_outside_allocated_ranges_are_accepted() {
        // Fictional-use and not-yet-allocated ranges: well-formed, so a carrier may hold them.
        assert_eq!(parse_e164("+15551234567").as_deref(), Some("+15551234567"));
        assert_eq!(parse_e164("+447700900123").as_deref(), Some("+447700900123"));
        assert_eq!(parse_e164("+61491570156").as_deref(), Some("+61491570156"));
    }

    #[test]
    fn path_segments_accept_a_space_for_the_plus() {
        assert_eq!(from_path_segment(" 447446466847"), "+447446466847");
        assert_eq!(from_path_segment("+447446466847"), "+447446466847");
    }
}
