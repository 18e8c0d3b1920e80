//! Kubernetes resource quantities (`10Mi`, `1.5Gi`, `1e6`, `8`) as whole numbers of bytes.
//!
//! The grammar is the API server's (`k8s.io/apimachinery/pkg/api/resource`): an optional sign,
//! a decimal number, then a binary suffix (`Ki Mi Gi Ti Pi Ei`), a decimal suffix
//! (`n u m k M G T P E`) or a decimal exponent (`e3`, `E-2`). EPC sizes are bytes, so a value
//! that is not a whole number of bytes (`0.5`, `100m`) is refused instead of rounded: rounding
//! would silently give a pod less (or more) enclave memory than its author wrote.

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QuantityError {
    /// Not a Kubernetes quantity at all.
    Syntax(&'static str),
    /// Below zero.
    Negative,
    /// Not a whole number of bytes.
    Fraction,
    /// Does not fit the arithmetic (far above any limit).
    TooLarge,
}

impl std::fmt::Display for QuantityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Syntax(why) => write!(f, "not a Kubernetes quantity ({why})"),
            Self::Negative => f.write_str("is negative"),
            Self::Fraction => f.write_str("is not a whole number of bytes"),
            Self::TooLarge => f.write_str("is too large"),
        }
    }
}

/// Longest quantity string accepted; the API server's own canonical forms are far shorter.
const MAX_LEN: usize = 64;

/// Parses `s` as a non-negative whole number (of bytes, or of whatever unit the caller means).
pub(crate) fn parse_whole(s: &str) -> Result<u128, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Syntax("empty"));
    }
    if s.len() > MAX_LEN {
        return Err(QuantityError::Syntax("longer than 64 characters"));
    }
    let bytes = s.as_bytes();
    let mut pos = 0usize;
    let mut negative = false;
    match bytes.first() {
        Some(b'+') => pos = 1,
        Some(b'-') => {
            negative = true;
            pos = 1;
        }
        _ => {}
    }
    // Digits before and after the decimal point, as one mantissa and a count of fraction digits.
    let mut mantissa: u128 = 0;
    let mut digits = 0usize;
    let mut frac_digits: u32 = 0;
    let mut seen_point = false;
    while let Some(&b) = bytes.get(pos) {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(u128::from(b - b'0')))
                    .ok_or(QuantityError::TooLarge)?;
                digits += 1;
                if seen_point {
                    frac_digits += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            b'.' => return Err(QuantityError::Syntax("two decimal points")),
            _ => break,
        }
        pos += 1;
    }
    if digits == 0 {
        return Err(QuantityError::Syntax("no digits"));
    }
    let suffix = s.get(pos..).ok_or(QuantityError::Syntax("not ASCII"))?;
    // value = mantissa * 10^dec_exp * 2^bin_exp / 10^frac_digits
    let (dec_exp, bin_exp): (i64, u32) = match suffix {
        "" => (0, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        _ => {
            let exp = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or(QuantityError::Syntax("unknown suffix"))?;
            let digits_only = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits_only.is_empty() || !digits_only.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Syntax("bad exponent"));
            }
            let e: i64 = exp
                .parse()
                .map_err(|_| QuantityError::Syntax("bad exponent"))?;
            (e, 0)
        }
    };
    if mantissa == 0 {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative);
    }
    let scale = dec_exp
        .checked_sub(i64::from(frac_digits))
        .ok_or(QuantityError::TooLarge)?;
    let mut value = mantissa
        .checked_mul(1u128 << bin_exp)
        .ok_or(QuantityError::TooLarge)?;
    if scale >= 0 {
        let p = u32::try_from(scale).map_err(|_| QuantityError::TooLarge)?;
        let f = 10u128.checked_pow(p).ok_or(QuantityError::TooLarge)?;
        value = value.checked_mul(f).ok_or(QuantityError::TooLarge)?;
    } else {
        // A divisor beyond u128 means the value is a non-zero fraction below one.
        let p = u32::try_from(-scale).map_err(|_| QuantityError::Fraction)?;
        let d = 10u128.checked_pow(p).ok_or(QuantityError::Fraction)?;
        if value % d != 0 {
            return Err(QuantityError::Fraction);
        }
        value /= d;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_decimal_plain_and_exponent_forms() {
        assert_eq!(parse_whole("10Mi"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_whole("8"), Ok(8));
        assert_eq!(parse_whole("+4Ki"), Ok(4096));
        assert_eq!(parse_whole("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_whole("0.5Ki"), Ok(512));
        assert_eq!(parse_whole("10M"), Ok(10_000_000));
        assert_eq!(parse_whole("1e6"), Ok(1_000_000));
        assert_eq!(parse_whole("1E+3"), Ok(1000));
        assert_eq!(parse_whole("2000m"), Ok(2));
        assert_eq!(parse_whole("1Ti"), Ok(1 << 40));
        assert_eq!(parse_whole("0"), Ok(0));
        assert_eq!(parse_whole("-0"), Ok(0));
        assert_eq!(parse_whole(".5k"), Ok(500));
    }

    #[test]
    fn refusals_name_the_cause() {
        assert_eq!(parse_whole("-1Mi"), Err(QuantityError::Negative));
        assert_eq!(parse_whole("1.5"), Err(QuantityError::Fraction));
        assert_eq!(parse_whole("100m"), Err(QuantityError::Fraction));
        assert_eq!(parse_whole("1e-999"), Err(QuantityError::Fraction));
        assert_eq!(parse_whole("1e999"), Err(QuantityError::TooLarge));
        assert_eq!(
            parse_whole("99999999999999999999999999999999999999999"),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(
            parse_whole("10MB"),
            Err(QuantityError::Syntax("unknown suffix"))
        );
        assert_eq!(parse_whole("Mi"), Err(QuantityError::Syntax("no digits")));
        assert_eq!(parse_whole(""), Err(QuantityError::Syntax("empty")));
        assert_eq!(
            parse_whole("1..2"),
            Err(QuantityError::Syntax("two decimal points"))
        );
        assert_eq!(
            parse_whole("1e"),
            Err(QuantityError::Syntax("bad exponent"))
        );
        assert_eq!(
            parse_whole("1e+"),
            Err(QuantityError::Syntax("bad exponent"))
        );
        assert_eq!(parse_whole(" 1"), Err(QuantityError::Syntax("no digits")));
        assert_eq!(
            parse_whole("10 Mi"),
            Err(QuantityError::Syntax("unknown suffix"))
        );
        assert_eq!(
            parse_whole("1é"),
            Err(QuantityError::Syntax("unknown suffix"))
        );
        assert!(parse_whole(&"1".repeat(65)).is_err());
    }
}
