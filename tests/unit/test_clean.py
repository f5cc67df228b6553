import pytest

from lmstack.config import CleanConfig
from lmstack.data.clean import clean_text, drop_reason


def test_normalisation():
    cfg = CleanConfig(strip_html=True)
    raw = "\ufb01ne\x07 text  \r\n<b>bold</b> &amp; more\n\n\n\n    indented   \n"
    assert clean_text(raw, cfg) == "fine text\n bold  & more\n\n    indented"


def test_html_kept_unless_asked():
    assert clean_text("<p>x</p>", CleanConfig()) == "<p>x</p>"


@pytest.mark.parametrize(
    "cfg, text, reason",
    [
        (CleanConfig(min_chars=10), "short", "too_short"),
        (CleanConfig(max_chars=5), "far too long", "too_long"),
        (CleanConfig(max_symbol_word_ratio=0.1), "# # # hash tags everywhere", "symbol_ratio"),
        (CleanConfig(max_repeated_line_fraction=0.3), "a\nb\na\na\na", "repeated_lines"),
        (CleanConfig(min_mean_word_length=3), "a b c d e f", "mean_word_length"),
        (CleanConfig(max_mean_word_length=10), "incomprehensibilities antidisestablishment", "mean_word_length"),
    ],
)
def test_each_rule_drops_and_names_itself(cfg, text, reason):
    assert drop_reason(text, cfg) == reason


def test_good_text_passes_every_rule():
    cfg = CleanConfig(min_chars=10, max_chars=1000, max_symbol_word_ratio=0.1,
                      max_repeated_line_fraction=0.3, min_mean_word_length=3, max_mean_word_length=10)
    assert drop_reason("A plain sentence about the weather.\nAnother different line here.", cfg) is None
