//! Money: ISO 4217 currencies and strictly positive amounts, never floating point.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a piece of text or a number is not valid money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The text is not a plain decimal number (`"abc"`, `"NaN"`, `"1e2"`, more than 28
    /// decimal places).
    #[error("amount is not a plain decimal number (digits with an optional sign and point, no exponent)")]
    NotANumber,
    /// Zero or below.
    #[error("amount must be greater than zero")]
    NotPositive,
    /// More fractional digits than the currency has minor units.
    #[error("amount has more than {minor_units} decimal places for {currency}")]
    TooPrecise {
        /// The currency the amount was checked against.
        currency: Currency,
        /// How many decimal places that currency allows.
        minor_units: u32,
    },
    /// Above [`Amount::MAX`].
    #[error("amount exceeds the maximum of {max}")]
    TooLarge {
        /// The largest amount one command may move.
        max: Decimal,
    },
    /// Not one of the ISO 4217 codes this ledger supports.
    #[error("unknown or unsupported currency {0:?}")]
    UnknownCurrency(String),
}

/// The currencies the ledger accepts, with their number of minor units (ISO 4217).
///
/// The list is deliberately closed: a wallet in a currency nobody can price is a support
/// ticket, not a feature.
const CURRENCIES: &[(&str, u32)] = &[
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("CAD", 2),
    ("AUD", 2),
    ("NZD", 2),
    ("SEK", 2),
    ("NOK", 2),
    ("DKK", 2),
    ("PLN", 2),
    ("JPY", 0),
];

/// An ISO 4217 currency code the ledger supports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// The default currency when a request names none.
    pub const USD: Currency = Currency(*b"USD");

    /// Parses a code such as `"USD"` or `"eur"` (case-insensitive).
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let upper = code.trim().to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == upper)
            .map(|(c, _)| {
                let b = c.as_bytes();
                Currency([b[0], b[1], b[2]])
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(16).collect()))
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The bytes always come from the ASCII table above.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// How many decimal places amounts in this currency may have.
    pub fn minor_units(&self) -> u32 {
        CURRENCIES
            .iter()
            .find(|(c, _)| c.as_bytes() == self.0)
            .map_or(2, |(_, u)| *u)
    }

    /// Formats a value with exactly this currency's number of decimal places.
    pub fn format(&self, value: Decimal) -> String {
        let mut v = value;
        v.rescale(self.minor_units());
        v.to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.code().to_owned()
    }
}

/// A strictly positive amount of money with at most two decimal places (the most any
/// supported currency allows) and at most [`Amount::MAX`].
///
/// An `Amount` is checked against a specific currency when it is built by
/// [`Amount::parse`] or [`Amount::new`]; amounts read back from stored events are trusted
/// to have been checked when they were written.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Amount(Decimal);

impl Amount {
    /// The largest amount one command may move: one billion units of any currency.
    pub const MAX: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

    /// Builds an amount in `currency`, rejecting zero, negatives, excess precision and
    /// values above [`Amount::MAX`].
    pub fn new(value: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if value <= Decimal::ZERO {
            return Err(MoneyError::NotPositive);
        }
        if value > Self::MAX {
            return Err(MoneyError::TooLarge { max: Self::MAX });
        }
        let normalized = value.normalize();
        let minor_units = currency.minor_units();
        if normalized.scale() > minor_units {
            return Err(MoneyError::TooPrecise {
                currency,
                minor_units,
            });
        }
        let mut v = normalized;
        v.rescale(minor_units);
        Ok(Amount(v))
    }

    /// Parses the exact decimal text of a JSON number or string (`"10"`, `"10.5"`) without
    /// ever going through a binary float. Exponents (`"1e2"`) are refused: a value written
    /// so can carry more precision than it shows, which would be rounded away.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        Self::new(parse_decimal(text)?, currency)
    }

    /// The value as a decimal.
    pub fn value(&self) -> Decimal {
        self.0
    }
}

/// Parses plain decimal text exactly (`-12.30`): ASCII digits, an optional leading sign
/// and one optional point. Exponents, surrounding whitespace, `NaN`, infinities, other
/// scripts' digits, and values a `Decimal` cannot hold exactly (more than 28 decimal
/// places, beyond about 7.9e28) are refused, never rounded.
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let t = text;
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty()
        || t.len() > 64
        || digits.bytes().filter(|b| *b == b'.').count() > 1
        || !digits.bytes().any(|b| b.is_ascii_digit())
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(MoneyError::NotANumber);
    }
    Decimal::from_str_exact(t).map_err(|_| MoneyError::NotANumber)
}

impl TryFrom<Decimal> for Amount {
    type Error = MoneyError;
    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        if value <= Decimal::ZERO {
            return Err(MoneyError::NotPositive);
        }
        Ok(Amount(value))
    }
}

impl From<Amount> for Decimal {
    fn from(a: Amount) -> Self {
        a.0
    }
}

impl FromStr for Amount {
    type Err = MoneyError;
    /// Parses as a USD-precision amount; prefer [`Amount::parse`] with the real currency.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::parse(s, Currency::USD)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Result<Amount, MoneyError> {
        Amount::parse(s, Currency::USD)
    }

    #[test]
    fn parses_exact_decimals_and_keeps_two_places() {
        assert_eq!(usd("10").map(|a| a.to_string()), Ok("10.00".into()));
        assert_eq!(usd("0.01").map(|a| a.to_string()), Ok("0.01".into()));
        assert_eq!(usd("+7.5").map(|a| a.to_string()), Ok("7.50".into()));
        assert_eq!(usd("10.100").map(|a| a.to_string()), Ok("10.10".into()));
        assert_eq!(
            usd("999999999.99").map(|a| a.to_string()),
            Ok("999999999.99".into())
        );
    }

    #[test]
    fn rejects_what_is_not_money() {
        assert_eq!(usd("0"), Err(MoneyError::NotPositive));
        assert_eq!(usd("-1"), Err(MoneyError::NotPositive));
        assert_eq!(usd("NaN"), Err(MoneyError::NotANumber));
        assert_eq!(usd("inf"), Err(MoneyError::NotANumber));
        assert_eq!(usd("abc"), Err(MoneyError::NotANumber));
        assert_eq!(usd(" 1"), Err(MoneyError::NotANumber));
        assert_eq!(usd("1e400"), Err(MoneyError::NotANumber));
        // Exponents are refused, also where they would hide excess precision.
        assert_eq!(usd("1e2"), Err(MoneyError::NotANumber));
        assert_eq!(usd("1.5E2"), Err(MoneyError::NotANumber));
        assert_eq!(
            usd("5.000000000000000000000000000001e0"),
            Err(MoneyError::NotANumber)
        );
        assert_eq!(
            usd("5.000000000000000000000000000001"),
            Err(MoneyError::NotANumber)
        );
        assert!(matches!(
            usd("5.0000000000000000000000000001"),
            Err(MoneyError::TooPrecise { .. })
        ));
        for odd in [
            "", "-", "+", ".", "1.2.3", "--1", "1-", "١٢", "１２", "12\u{0}", "0x10",
        ] {
            assert_eq!(usd(odd), Err(MoneyError::NotANumber), "{odd:?}");
        }
        assert!(matches!(
            usd("79228162514264337593543950335"),
            Err(MoneyError::TooLarge { .. })
        ));
        assert_eq!(
            usd("79228162514264337593543950336"),
            Err(MoneyError::NotANumber)
        );
        assert!(matches!(usd("0.001"), Err(MoneyError::TooPrecise { .. })));
        assert!(matches!(
            usd("1000000000.01"),
            Err(MoneyError::TooLarge { .. })
        ));
        let jpy = Currency::parse("jpy").expect("JPY is supported");
        assert!(matches!(
            Amount::parse("1.5", jpy),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert_eq!(
            Amount::parse("15", jpy).map(|a| a.to_string()),
            Ok("15".into())
        );
    }

    #[test]
    fn currencies_are_a_closed_list() {
        assert_eq!(Currency::parse("usd"), Ok(Currency::USD));
        assert!(Currency::parse("XXX").is_err());
        assert!(Currency::parse("").is_err());
        assert_eq!(Currency::USD.format(Decimal::new(5, 0)), "5.00");
    }

    proptest::proptest! {
        #[test]
        fn any_cent_amount_round_trips_exactly(cents in 1i64..=100_000_000_000i64) {
            let value = Decimal::new(cents, 2);
            let parsed = usd(&value.to_string()).map(Decimal::from);
            proptest::prop_assert_eq!(parsed, Ok(value));
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,40}") {
            let _ = usd(&s);
        }
    }
}
