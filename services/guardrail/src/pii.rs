//! Personal data: e-mail, phone numbers, credit cards (Luhn-checked), IBANs (mod-97-checked),
//! IP addresses and US social security numbers, found and optionally redacted as
//! `[REDACTED_EMAIL]`, `[REDACTED_PHONE_NUMBER]`, ...

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

/// One kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    /// US social security number.
    UsSsn,
    /// Payment card number.
    CreditCard,
    /// International bank account number.
    Iban,
    /// E-mail address.
    Email,
    /// IPv4 or IPv6 address.
    IpAddress,
    /// Phone number.
    PhoneNumber,
}

impl PiiKind {
    /// Every kind, in the order they are looked for (specific before general).
    pub const ALL: [PiiKind; 6] =
        [Self::UsSsn, Self::CreditCard, Self::Iban, Self::Email, Self::IpAddress, Self::PhoneNumber];

    /// Policy name.
    pub fn policy(self) -> &'static str {
        match self {
            Self::UsSsn => "pii_us_ssn",
            Self::CreditCard => "pii_credit_card",
            Self::Iban => "pii_iban",
            Self::Email => "pii_email",
            Self::IpAddress => "pii_ip_address",
            Self::PhoneNumber => "pii_phone_number",
        }
    }

    /// The redaction placeholder.
    pub fn placeholder(self) -> &'static str {
        match self {
            Self::UsSsn => "[REDACTED_US_SSN]",
            Self::CreditCard => "[REDACTED_CREDIT_CARD]",
            Self::Iban => "[REDACTED_IBAN]",
            Self::Email => "[REDACTED_EMAIL]",
            Self::IpAddress => "[REDACTED_IP_ADDRESS]",
            Self::PhoneNumber => "[REDACTED_PHONE_NUMBER]",
        }
    }

    fn regex(self) -> &'static Regex {
        static RES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
            [
                r"\b\d{3}-\d{2}-\d{4}\b",
                r"\b\d(?:[ -]?\d){12,18}\b",
                r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
                r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
                r"\b(?:\d{1,3}\.){3}\d{1,3}\b|(?i:\b[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}\b)",
                r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\b\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}\b",
            ]
            .iter()
            .map(|r| Regex::new(r).expect("valid PII regex"))
            .collect()
        });
        let i = Self::ALL.iter().position(|k| *k == self).expect("kind listed");
        &RES[i]
    }

    /// Whether a regex match really is this kind (checksums and ranges).
    fn confirm(self, s: &str) -> bool {
        let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
        match self {
            Self::UsSsn => {
                let area = digits[..3].iter().fold(0, |a, d| a * 10 + d);
                let group = digits[3..5].iter().fold(0, |a, d| a * 10 + d);
                let serial = digits[5..].iter().fold(0, |a, d| a * 10 + d);
                area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
            }
            Self::CreditCard => (13..=19).contains(&digits.len()) && luhn(&digits),
            Self::Iban => iban_valid(s),
            Self::Email => true,
            Self::IpAddress => s.parse::<IpAddr>().is_ok(),
            Self::PhoneNumber => (9..=15).contains(&digits.len()),
        }
    }
}

/// The Luhn checksum of a card number.
pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 = 1.
pub fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
    let mut rem: u64 = 0;
    for c in rearranged.chars() {
        let v = match c {
            '0'..='9' => c as u64 - '0' as u64,
            'A'..='Z' => c as u64 - 'A' as u64 + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// Kinds found in `text`, and the text with each found span replaced by its placeholder.
pub fn scan(text: &str, kinds: &[PiiKind]) -> (Vec<PiiKind>, String) {
    let mut found = Vec::new();
    let mut out = text.to_string();
    for kind in PiiKind::ALL.iter().filter(|k| kinds.contains(k)) {
        let re = kind.regex();
        // Text shaped like a more specific kind that failed its checksum is not this kind either:
        // a long digit run is no phone number, the digits of an IBAN are no card number.
        let shadow = match kind {
            PiiKind::PhoneNumber => Some(PiiKind::CreditCard),
            PiiKind::CreditCard => Some(PiiKind::Iban),
            _ => None,
        };
        let numbers: Vec<(usize, usize)> =
            shadow.map(|k| k.regex().find_iter(&out).map(|m| (m.start(), m.end())).collect()).unwrap_or_default();
        let mut hit = false;
        let replaced = re.replace_all(&out, |c: &regex::Captures<'_>| {
            let whole = c.get(0).expect("match");
            let m = whole.as_str();
            let inside_number = numbers.iter().any(|(a, b)| whole.start() < *b && *a < whole.end());
            if !inside_number && kind.confirm(m) {
                hit = true;
                kind.placeholder().to_string()
            } else {
                m.to_string()
            }
        });
        if hit {
            found.push(*kind);
            out = replaced.into_owned();
        }
    }
    (found, out)
}
