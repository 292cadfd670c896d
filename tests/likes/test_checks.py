"""The LIKES settings are checked at start-up."""

import pytest

from likes.checks import check_likes_settings


@pytest.mark.parametrize("window", [0, -5, 2.5, "250", True, None])
def test_a_coalescing_window_that_is_not_a_positive_whole_number_is_an_error(settings, window):
    settings.LIKES = {"COALESCE_MS": window}
    assert [error.id for error in check_likes_settings(None)] == ["likes.E001"]


def test_the_default_window_passes(settings):
    settings.LIKES = {}
    assert check_likes_settings(None) == []
