"""Exact money: ISO-4217 currencies with their minor units, and amount validation.

Money is `decimal.Decimal` everywhere; a float never enters. The rules here are the
spec's: an amount must be finite, positive, at most `AMOUNT_MAX`, and carry no more
decimals than its currency allows. Every count is made on the exact value (its digits
and exponent), never through a rounding context: `normalize()` rounds to the context's
28 digits first, so 10.000000000000000000000000000001 would pass as 10.
"""

from decimal import Decimal, InvalidOperation

# Largest amount accepted for one item, in major units. Bounds the ledger's numbers and
# refuses absurd inputs; well above any real stake in any ISO currency.
AMOUNT_MAX = Decimal("1000000000000")
# The most decimals any currency has (CLF, UYW): the bound for an amount whose currency
# is not named (an HPGames cancel without `currency`: the worker checks the debit's).
MINOR_UNITS_MAX = 4
# The ledger's digit bound: at most 13 integer digits (AMOUNT_MAX is 10^12) and the
# currency's decimals (at most 4), so an amount never has more than 17 significant
# digits. The database column is an unconstrained `numeric`; this is the one place that
# bounds what enters it (the CLI's debits and opening balances included), so every
# amount can be written back exactly and `balance = sum(entries)` holds exactly.
AMOUNT_DIGITS_MAX = 17

# Active ISO-4217 codes and their minor units (number of decimals).
_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS = "CLF UYW"
_TWO_DECIMALS = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS "
    "KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
    "UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

CURRENCY_MINOR_UNITS: dict[str, int] = {
    **{code: 0 for code in _ZERO_DECIMALS.split()},
    **{code: 2 for code in _TWO_DECIMALS.split()},
    **{code: 3 for code in _THREE_DECIMALS.split()},
    **{code: 4 for code in _FOUR_DECIMALS.split()},
}


class MoneyError(ValueError):
    """An amount or currency that the spec's money rules refuse."""


def validate_currency(code: str) -> str:
    """Return `code` if it is an active ISO-4217 currency, else raise MoneyError."""
    if code not in CURRENCY_MINOR_UNITS:
        raise MoneyError(f"unknown currency {code[:8]!r}")
    return code


def _significant(amount: Decimal) -> tuple[int, tuple[int, ...], int]:
    """(sign, digits, exponent) of a finite `amount` with trailing zeros removed from
    its digits: exact (no context, no rounding), unlike `normalize()`."""
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int), "finite"
    kept = len(digits)
    while kept > 1 and digits[kept - 1] == 0:
        kept -= 1
    if digits[:kept] == (0,):
        return sign, (0,), 0
    return sign, digits[:kept], exponent + len(digits) - kept


def decimals(amount: Decimal) -> int:
    """How many decimals the exact value of a finite `amount` has (10.50 has 1)."""
    return max(0, -_significant(amount)[2])


def validate_amount(amount: Decimal, currency: str | None) -> Decimal:
    """Return `amount` if it is a valid positive amount in `currency`.

    Refuses NaN, infinities, zero, negatives, amounts above AMOUNT_MAX, amounts with
    more decimals than the currency has and amounts with more than AMOUNT_DIGITS_MAX
    significant digits, all counted on the exact value. With no currency (the provider
    did not name it), at most MINOR_UNITS_MAX decimals: the worker checks the amount
    against the debit's, in the debit's currency.
    """
    if currency is None:
        minor_units = MINOR_UNITS_MAX
    else:
        known = CURRENCY_MINOR_UNITS.get(currency)
        if known is None:
            raise MoneyError(f"unknown currency {currency[:8]!r}")
        minor_units = known
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise MoneyError("amount must be a finite number")
    if amount <= 0:
        raise MoneyError("amount must be positive")
    if amount > AMOUNT_MAX:
        raise MoneyError("amount too large")
    _, digits, exponent = _significant(amount)
    if -exponent > minor_units:
        where = f"for {currency}" if currency is not None else "in any currency"
        raise MoneyError(f"amount has more than {minor_units} decimals {where}")
    if len(digits) > AMOUNT_DIGITS_MAX:
        raise MoneyError(f"amount has more than {AMOUNT_DIGITS_MAX} significant digits")
    return amount


def canonical_amount(amount: Decimal) -> str:
    """The exact value as text, trailing zeros dropped (10.50 and 10.5 read the same):
    what a request digest covers. Exact: the same text as `str(amount.normalize())`
    wherever that does not round (every amount `validate_amount` accepts), so digests
    stored before stay valid."""
    if not amount.is_finite():
        return str(amount)
    return str(Decimal(_significant(amount)))


def format_amount(amount: Decimal, currency: str) -> str:
    """Render `amount` with exactly the currency's minor units, e.g. '-10.00'."""
    minor_units = CURRENCY_MINOR_UNITS[currency]
    quantum = Decimal(1).scaleb(-minor_units)
    try:
        quantized = amount.quantize(quantum)
    except InvalidOperation as exc:  # more digits than the context allows
        raise MoneyError("amount out of range") from exc
    return format(quantized, "f")
