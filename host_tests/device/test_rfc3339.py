"""rfc3339: RFC 3339 date-times <-> int seconds since 2020-01-01Z."""

from devtest import raises

from chargepilot.base import rfc3339


def test_epoch_is_2020():
    assert rfc3339.parse("2020-01-01T00:00:00Z") == 0
    assert rfc3339.format(0) == "2020-01-01T00:00:00Z"
    assert rfc3339.from_fields(2020, 1, 1, 0, 0, 0) == 0


def test_known_instants():
    assert rfc3339.parse("2020-01-02T00:00:01Z") == 86401
    # 2020 is a leap year: 366 days
    assert rfc3339.parse("2021-01-01T00:00:00Z") == 366 * 86400
    assert rfc3339.parse("2024-08-21T12:24:36Z") == rfc3339.from_fields(2024, 8, 21, 12, 24, 36)
    # independent count: 2020..2023 = 366+365+365+365 days, then Jan..Jul 2024 (leap)
    days = 366 + 365 + 365 + 365 + 31 + 29 + 31 + 30 + 31 + 30 + 31 + 20
    assert rfc3339.parse("2024-08-21T00:00:00Z") == days * 86400


def test_before_2020_is_negative():
    assert rfc3339.parse("2019-12-31T23:59:59Z") == -1
    assert rfc3339.format(-1) == "2019-12-31T23:59:59Z"
    assert rfc3339.parse("1970-01-01T00:00:00Z") == -18262 * 86400


def test_offsets_are_applied():
    assert rfc3339.parse("2024-01-01T02:00:00+02:00") == rfc3339.parse("2024-01-01T00:00:00Z")
    assert rfc3339.parse("2023-12-31T19:30:00-04:30") == rfc3339.parse("2024-01-01T00:00:00Z")
    assert rfc3339.parse("2024-01-01T00:00:00+00:00") == rfc3339.parse("2024-01-01T00:00:00Z")
    assert rfc3339.parse("2024-01-01T00:00:00-00:00") == rfc3339.parse("2024-01-01T00:00:00Z")


def test_lowercase_t_and_z():
    assert rfc3339.parse("2024-03-01t12:00:00z") == rfc3339.parse("2024-03-01T12:00:00Z")


def test_fractions_are_floored():
    base = rfc3339.parse("2024-01-17T00:00:00Z")
    assert rfc3339.parse("2024-01-17T00:00:00.000Z") == base
    assert rfc3339.parse("2024-01-17T00:00:00.999Z") == base
    assert rfc3339.parse("2024-01-17T00:00:00.5+01:00") == base - 3600
    assert rfc3339.parse("2019-12-31T23:59:59.999999Z") == -1


def test_leap_years():
    assert rfc3339.parse("2024-02-29T00:00:00Z") + 86400 == rfc3339.parse("2024-03-01T00:00:00Z")
    assert rfc3339.parse("2000-02-29T00:00:00Z") < 0
    raises(ValueError, rfc3339.parse, "2023-02-29T00:00:00Z")
    raises(ValueError, rfc3339.parse, "2100-02-29T00:00:00Z")
    raises(ValueError, rfc3339.parse, "1900-02-29T00:00:00Z")
    assert rfc3339.format(rfc3339.parse("2096-02-29T23:59:59Z")) == "2096-02-29T23:59:59Z"


def test_leap_second_counts_as_next_minute():
    assert rfc3339.parse("2016-12-31T23:59:60Z") == rfc3339.parse("2017-01-01T00:00:00Z")


def test_format_round_trip_over_many_days():
    t = rfc3339.parse("2019-12-25T13:14:15Z")
    step = 86400 * 13 + 3607
    for _ in range(400):
        assert rfc3339.parse(rfc3339.format(t)) == t
        t += step


def test_bad_strings_rejected_with_reason():
    bad = [
        "", "2024-01-01", "2024-01-01T00:00:00", "2024-01-01 00:00:00Z",
        "2024-1-01T00:00:00Z", "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z",
        "2024-04-31T00:00:00Z", "2024-01-00T00:00:00Z", "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z", "2024-01-01T00:00:61Z", "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00.1234567890Z", "2024-01-01T00:00:00+0100",
        "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00+01:60", "2024-01-01T00:00:00ZZ",
        "2024-01-01T00:00:00Z ", "x024-01-01T00:00:00Z", "2024/01/01T00:00:00Z",
        "2024-01-01T00:00:00+01", "２024-01-01T00:00:00Z",
    ]
    for s in bad:
        e = raises(ValueError, rfc3339.parse, s)
        assert "RFC 3339" in str(e), (s, str(e))


def test_non_strings_rejected():
    for v in (None, 0, 1.5, b"2024-01-01T00:00:00Z", ["2024-01-01T00:00:00Z"]):
        e = raises(ValueError, rfc3339.parse, v)
        assert "expected a string" in str(e)


def test_to_fields():
    assert rfc3339.to_fields(rfc3339.parse("2031-07-04T05:06:07Z")) == (2031, 7, 4, 5, 6, 7)
    assert rfc3339.days_in_month(2024, 2) == 29
    assert rfc3339.days_in_month(2023, 2) == 28
    assert rfc3339.days_in_month(2023, 11) == 30


def test_is_date_time_is_the_validators_matcher():
    ok = ("2024-02-29T23:59:60Z", "2000-02-29T00:00:00z", "2024-01-01t00:00:00.123456789-12:30",
          "1999-12-31T23:59:59+23:59", "2024-04-30T00:00:00Z",
          "2024-01-01T00:00:00.1234567890Z")
    bad = ("2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-04-31T00:00:00Z",
           "2024-13-01T00:00:00Z", "2024-00-01T00:00:00Z", "2024-01-00T00:00:00Z",
           "2024-01-01T00:60:00Z", "2024-01-01T00:00:61Z", "2024-01-01T00:00:00+24:00",
           "2024-01-01T00:00:00+01:60", "2024-01-01T00:00:00ZZ", "2024-01-01T00:00:00",
           "+2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5", "\uff12024-01-01T00:00:00Z",
           "", 20240101, None)
    for s in ok:
        assert rfc3339.is_date_time(s), s
    for s in bad:
        assert not rfc3339.is_date_time(s), s


def test_parse_is_is_date_time_with_at_most_9_fraction_digits():
    # one grammar: parse refuses only the fraction is_date_time lets through
    long = "2024-01-01T00:00:00.1234567890Z"
    assert rfc3339.is_date_time(long)
    raises(ValueError, rfc3339.parse, long)
    assert rfc3339.parse("2024-01-01T00:00:00.123456789+01:00") == rfc3339.parse(
        "2023-12-31T23:00:00Z")
