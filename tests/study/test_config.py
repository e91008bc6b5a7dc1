import pytest

from healthtransfer.errors import UserInputError
from healthtransfer.study import load_study

VALID = """
[study]
name = "x"
[data]
dataset = "uci_heart"
[transfer]
sources = ["cleveland"]
target = "va"
"""


def write(tmp_path, text):
    p = tmp_path / "study.toml"
    p.write_text(text)
    return p


def test_valid_study_has_defaults_and_resolves_paths(tmp_path):
    s = load_study(write(tmp_path, VALID.replace('dataset = "uci_heart"', 'path = "d.csv"\ndomain = "site"\nlabel = "y"')))
    assert s.transfer.labeled_target == [0, 10, 20, 40] and s.transfer.seeds == 20
    assert s.resolve(s.data.path) == (tmp_path / "d.csv").resolve()


@pytest.mark.parametrize("text, key", [
    (VALID.replace("seeds", "x").replace('target = "va"', 'target = "va"\nseedz = 3'), "seedz"),
    (VALID + "seeds = 'many'\n", "seeds"),
    (VALID.replace('target = "va"', 'target = "cleveland"'), "transfer"),
    (VALID.replace('dataset = "uci_heart"', ''), "data"),
    (VALID.split("[transfer]")[0], "transfer"),
    (VALID + "test_fraction = 1.5\n", "test_fraction"),
    (VALID + "labeled_target = [-1]\n", "labeled_target"),
])
def test_errors_name_the_key_and_the_fix(tmp_path, text, key):
    with pytest.raises(UserInputError) as err:
        load_study(write(tmp_path, text))
    assert key in str(err.value)


def test_syntax_error_and_empty_file(tmp_path):
    with pytest.raises(UserInputError, match="TOML"):
        load_study(write(tmp_path, "[study\nname="))
    with pytest.raises(UserInputError, match="empty"):
        load_study(write(tmp_path, ""))
