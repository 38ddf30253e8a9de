"""Exact money: ISO-4217 currencies with their minor units, and amount validation.

Money is `decimal.Decimal` everywhere; a float never enters. The rules here are the
spec's: an amount must be finite, positive, at most `AMOUNT_MAX`, and carry no more
decimals than its currency allows.
"""

from decimal import Decimal, InvalidOperation

# Largest amount accepted for one item, in major units. Bounds the ledger's numbers and
# refuses absurd inputs; well above any real stake in any ISO currency.
AMOUNT_MAX = Decimal("1000000000000")

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


def validate_amount(amount: Decimal, currency: str) -> Decimal:
    """Return `amount` if it is a valid positive amount in `currency`.

    Refuses NaN, infinities, zero, negatives, amounts above AMOUNT_MAX and amounts with
    more decimals than the currency has.
    """
    minor_units = CURRENCY_MINOR_UNITS.get(currency)
    if minor_units is None:
        raise MoneyError(f"unknown currency {currency[:8]!r}")
    if not amount.is_finite():
        raise MoneyError("amount must be a finite number")
    if amount <= 0:
        raise MoneyError("amount must be positive")
    if amount > AMOUNT_MAX:
        raise MoneyError("amount too large")
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > minor_units:
        raise MoneyError(f"amount has more than {minor_units} decimals for {currency}")
    return amount


def format_amount(amount: Decimal, currency: str) -> str:
    """Render `amount` with exactly the currency's minor units, e.g. '-10.00'."""
    minor_units = CURRENCY_MINOR_UNITS[currency]
    quantum = Decimal(1).scaleb(-minor_units)
    try:
        quantized = amount.quantize(quantum)
    except InvalidOperation as exc:  # more digits than the context allows
        raise MoneyError("amount out of range") from exc
    return format(quantized, "f")
