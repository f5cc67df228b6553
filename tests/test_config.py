import pytest

from lmstack.config import RecipeError, load_recipe

BASE = """
name: r
data:
  paths: [corpus.txt]
model:
  n_layer: 2
"""


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_valid_recipe_with_overrides(tmp_path):
    r = load_recipe(write(tmp_path, BASE), ["train.lr=3e-4", "model.n_layer=4", "data.paths=[a, b]"])
    assert r.train.lr == 3e-4 and r.model.n_layer == 4 and r.data.paths == ["a", "b"]


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        (BASE + "  n_layr: 3\n", [], "model.n_layr: unknown key"),
        (BASE, ["train.lr=fast"], "train.lr: Input should be a valid number"),
        (BASE, ["train.lr=-1"], "train.lr: Input should be greater than 0"),
        (BASE, ["model.n_head=3"], "model: Value error, n_head (3) must divide n_embd (128)"),
        (BASE, ["data.dedup.bands=7"], "data.dedup: Value error, bands (7) must divide num_perm (128)"),
        (BASE.replace("  paths: [corpus.txt]\n", "  text_field: body\n"), [], "data.paths: Field required"),
    ],
)
def test_errors_name_file_and_dotted_key(tmp_path, text, overrides, expected):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {expected}")


def test_env_references(tmp_path, monkeypatch):
    monkeypatch.setenv("CORPUS_DIR", "/data/x")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    text = "data:\n  paths: ['${CORPUS_DIR}/a.txt', '${UNSET_VAR:-/fallback}/b.txt']\n"
    r = load_recipe(write(tmp_path, text))
    assert r.data.paths == ["/data/x/a.txt", "/fallback/b.txt"]
    assert r.name == "r"  # defaults to the file's stem
    with pytest.raises(RecipeError, match=r"r.yaml:2: environment variable UNSET_VAR is not set"):
        load_recipe(write(tmp_path, "data:\n  paths: ['${UNSET_VAR}/a']\n"))


def test_yaml_syntax_error_names_line(tmp_path):
    with pytest.raises(RecipeError, match=r"r.yaml:3: not valid YAML"):
        load_recipe(write(tmp_path, "data:\n  paths: [a\n  x: ]\n"))


def test_bad_override_syntax(tmp_path):
    with pytest.raises(RecipeError, match="expected key=value"):
        load_recipe(write(tmp_path, BASE), ["train.lr"])
