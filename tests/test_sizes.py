"""The one size parser (grokweights._sizes.parse_size): every size and rate option, export's --shard-size too."""

from __future__ import annotations

import pytest

from grokweights._sizes import parse_size
from grokweights.errors import UsageError


@pytest.mark.parametrize("text, want", [
    ("512K", 512 * 1024), ("16M", 16 << 20), ("2G", 2 << 30), ("1T", 1 << 40), ("1.5K", 1536),
    ("16MiB", 16 << 20), ("5GiB", 5 << 30), ("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("200KB", 200_000),
    ("1000000", 1_000_000), (" 16 m ", 16 << 20), ("7b", 7), (4096, 4096), (None, None),
])
def test_the_rule(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["inf", "nan", "-1", "1e400", "1e3", "5X", "", "lots", "9" * 5000,
                                  str(1 << 63), "8E", -5, True, 1.5])
def test_what_is_not_a_size(text):
    with pytest.raises(UsageError, match="bad shard size"):
        parse_size(text, what="shard size")


def test_zero_only_where_it_means_something():
    with pytest.raises(UsageError, match="more than 0"):
        parse_size("0")
    assert parse_size("0", zero_ok=True) == 0


def test_every_caller_uses_it():
    from grokweights.engines import parse_size as export_size
    from grokweights.torrent.session import parse_rate
    from grokweights.torrent.session import parse_size as torrent_size

    assert export_size is parse_size and torrent_size is parse_size
    assert parse_rate("0") is None and parse_rate("50M") == 50 << 20
