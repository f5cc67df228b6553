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


def test_env_values_cannot_inject_keys_and_comments_are_comments(tmp_path, monkeypatch):
    # Substituting into the YAML text would turn this value into a second key (data.output).
    monkeypatch.setenv("CORPUS", "a.txt]\n  output: /etc/evil\n  x: [b")
    r = load_recipe(write(tmp_path, "# uses ${NOT_SET_ANYWHERE}\ndata:\n  paths: ['${CORPUS}']\n"))
    assert r.data.paths == ["a.txt]\n  output: /etc/evil\n  x: [b"] and r.data.output is None


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        (BASE, ["train.lr=.inf"], "train.lr: Input should be a finite number"),
        (BASE, ["train.seed=-1"], "train.seed: Input should be greater than or equal to 0"),
        (BASE, ["train.seed=4294967296"], "train.seed: Input should be less than 4294967296"),
        (BASE, ["train.warmup_steps=50", "train.max_steps=10"], "train: Value error, warmup_steps (50) must not exceed"),
        (BASE, ["data.clean.min_chars=50", "data.clean.max_chars=10"], "data.clean: Value error, min_chars (50)"),
        (BASE, ["model.family=llama", "model.n_kv_head=3"], "model: Value error, n_kv_head (3) must divide n_head"),
        (BASE, ["name=.."], "name: String should match pattern"),
        (BASE, ["translate.directions=[zh-en]"], "translate: a section of task 'translate'; this recipe's task is 'lm'"),
        (BASE, ["task=nope"], "task: unknown task 'nope'"),
        (BASE + "data:\n  paths: [other]\n", [], "r.yaml:7: duplicate key 'data' (first given on line 3)"),
    ],
)
def test_recipes_that_were_silently_accepted(tmp_path, text, overrides, expected):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, overrides)
    assert "\n" not in str(err.value) and expected in str(err.value)


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: r\ndata:\n  paths: [\xff]\n")
    with pytest.raises(RecipeError, match=r"r.yaml:3: not UTF-8 text"):
        load_recipe(path)


@pytest.mark.parametrize("task, section, data_key, value", [
    ("translate", {"translate": {}}, "dedup", {"near": True}),
    ("translate", {"translate": {}}, "val_fraction", 0.3),
    ("classify", {"classify": {}}, "clean", {"strip_html": True}),
    ("classify", {"classify": {}}, "block_size", 64),
])
def test_data_keys_a_task_does_not_read_are_refused(task, section, data_key, value):
    from lmstack.config import validate_recipe

    raw = {"name": "r", "task": task, "data": {"paths": ["a"], data_key: value}, **section}
    with pytest.raises(RecipeError, match=rf"r.yaml: data.{data_key}: not used by task '{task}'"):
        validate_recipe(raw, "r.yaml")
    del raw["data"][data_key]
    validate_recipe(raw, "r.yaml")  # the same recipe without it is fine
