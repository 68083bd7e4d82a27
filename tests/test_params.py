"""params.yaml validation and the rule that a stage reads only the params dvc.yaml declares."""

from __future__ import annotations

import copy
import itertools
import re
import shlex
import shutil
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import files_in, run_stage

from devtools.workspace import PROJECT, copy_project
from stages.common import StageError
from stages.params import Params, Section, declared_sections, load_params, validate_params

DEFAULTS = yaml.safe_load((PROJECT / "params.yaml").read_text())


def parent_of(params: dict, dotted: str) -> tuple[dict, str]:
    """The mapping that holds the dotted key (`model.conv_blocks.0.filters`), and its last part."""
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    return node, last


def with_value(dotted: str, value: object) -> dict:
    params = copy.deepcopy(DEFAULTS)
    node, last = parent_of(params, dotted)
    node[last] = value
    return params


def test_project_params_are_valid():
    params = validate_params(DEFAULTS)
    assert params.train.optimizer in ("adam", "adadelta", "sgd", "rmsprop")


def schema_keys(section: type[Section], prefix: str) -> Iterator[str]:
    """Every key of `section` as the README writes it: `model.conv_blocks[].filters`."""
    for name, field in section.model_fields.items():
        key = f"{prefix}.{name}"
        yield key
        for inner in typing.get_args(field.annotation):
            if isinstance(inner, type) and issubclass(inner, Section):
                yield from schema_keys(inner, f"{key}[]")


def test_every_params_key_is_documented():
    reference = (PROJECT / "README.md").read_text().split("## Params reference")[1]
    keys = [
        key
        for name, field in Params.model_fields.items()
        for key in schema_keys(field.annotation, name)
    ]
    assert "model.conv_blocks[].strides" in keys and "train.ensemble_size" in keys
    assert [key for key in keys if f"`{key}`" not in reference] == []


def sweep(override: str) -> list[str]:
    """`key=a,b` queues one experiment per value, as `dvc exp run --queue -S` does."""
    key, value = override.split("=", 1)
    if "," in value and not value.startswith("["):
        return [f"{key}={one}" for one in value.split(",")]
    return [override]


def readme_experiments() -> list[list[str]]:
    """The `-S key=value` overrides of each experiment that a `dvc exp run` command in
    README.md's code blocks runs (a sweep runs several)."""
    text = (PROJECT / "README.md").read_text().replace("\\\n", " ")
    commands = re.findall(r"^dvc exp run .*$", text, re.MULTILINE)
    experiments = []
    for command in commands:
        words = shlex.split(command, comments=True)
        overrides = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
        # Lines with a placeholder for the user's own file are about data, not recipes.
        if overrides and not any("/path/to" in o or "<" in o for o in overrides):
            experiments += [list(one) for one in itertools.product(*map(sweep, overrides))]
    return experiments


def test_readme_has_the_documented_experiments():
    # The three notebook architectures and the Params reference example, at least.
    assert len(readme_experiments()) >= 4


@pytest.mark.parametrize("overrides", readme_experiments(), ids=lambda o: " ".join(o)[:60])
def test_readme_experiments_set_valid_params_and_change_something(overrides):
    params = copy.deepcopy(DEFAULTS)
    for override in overrides:
        dotted, value = override.split("=", 1)
        node, last = parent_of(params, dotted)
        assert last in node, f"{dotted} is not a params key"
        # DVC parses the value of -S as YAML, like this.
        node[last] = yaml.safe_load(value)
    validate_params(params)
    assert params != DEFAULTS, "the experiment sets the values the defaults already have"


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        (
            "train.epochs",
            -1,
            r"train\.epochs: Input should be greater than or equal to 1 \(got -1\)",
        ),
        ("train.epochs", "ten", r"train\.epochs: Input should be a valid integer \(got 'ten'\)"),
        ("train.epochs", 2.5, r"train\.epochs: Input should be a valid integer"),
        ("train.optimizer", "foo", r"train\.optimizer: Input should be 'adam', 'adadelta', 'sgd'"),
        ("train.learning_rate", 0, r"train\.learning_rate: Input should be greater than 0"),
        ("data.sha256", "abc", r"data\.sha256: String should match pattern"),
        ("preprocess.validation_size", 0, r"preprocess\.validation_size: .*greater than or equal"),
        ("model.batch_norm", "yes", r"model\.batch_norm: Input should be a valid boolean"),
        ("model.tta", "flip", r"model\.tta: Input should be 'none', 'cross' or 'grid'"),
        ("model.crop", 14, r"model\.crop: Input should be less than or equal to 13"),
        ("model.crop", -1, r"model\.crop: Input should be greater than or equal to 0"),
        ("model.resize", 29, r"model\.resize: Input should be less than or equal to 28"),
        ("train.ema_momentum", 1.0, r"train\.ema_momentum: Input should be less than 1"),
        ("train.weight_decay", -0.1, r"train\.weight_decay: Input should be greater than or equal"),
        ("model.conv_blocks.0.dropout", 1.0, r"model\.conv_blocks\[0\]\.dropout: .*less than 1"),
        ("plots.dpi", 5, r"plots\.dpi: Input should be greater than or equal to 10"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(dotted, value, message):
    with pytest.raises(StageError, match=message):
        validate_params(with_value(dotted, value))


def test_unknown_key_lists_allowed_keys():
    params = copy.deepcopy(DEFAULTS)
    params["train"]["epoch"] = params["train"].pop("epochs")
    with pytest.raises(StageError) as error:
        validate_params(params)
    assert "train.epoch: unknown key (allowed: epochs, batch_size, optimizer" in str(error.value)
    assert "train.epochs: missing" in str(error.value)


def test_weight_averaging_with_early_stopping_is_refused_in_one_line():
    params = with_value("train.ema_momentum", 0.999)
    params["train"]["early_stopping_patience"] = 3
    with pytest.raises(StageError, match="train: ema_momentum and early_stopping_patience cannot"):
        validate_params(params)


def test_unknown_key_in_a_conv_block():
    params = with_value("model.conv_blocks.0.filter", 8)
    with pytest.raises(
        StageError, match=r"model\.conv_blocks\[0\]\.filter: unknown key \(allowed: filters,"
    ):
        validate_params(params)


def test_missing_section():
    params = copy.deepcopy(DEFAULTS)
    del params["plots"]
    with pytest.raises(StageError, match="plots: missing"):
        validate_params(params)


def test_yaml_1_1_exponent_floats_are_accepted():
    assert validate_params(with_value("train.learning_rate", "1e-3")).train.learning_rate == 0.001


def test_model_that_shrinks_the_image_to_nothing_is_refused():
    blocks = [{"filters": 8, "kernel_size": 5, "pool": True}] * 3
    with pytest.raises(StageError, match=r"model: conv_blocks\[2\] shrinks the feature map"):
        validate_params(with_value("model.conv_blocks", blocks))


def test_strided_convs_shrink_the_feature_map_like_keras():
    # valid: 28 → (28 − 5) // 2 + 1 = 12 → 4 → nothing; same: 28 → 14 → 7 → 4
    valid = [{"filters": 8, "kernel_size": 5, "strides": 2}] * 3
    with pytest.raises(StageError, match=r"model: conv_blocks\[2\] shrinks the feature map"):
        validate_params(with_value("model.conv_blocks", valid))
    same = [{"filters": 8, "kernel_size": 5, "strides": 2, "padding": "same"}] * 3
    assert validate_params(with_value("model.conv_blocks", same)).model.conv_blocks[2].strides == 2


# The default's blocks: crop 6 leaves 16 → 14 → 6 → 4 → 2 → pool 1; crop 7 leaves
# 14 → 12 → 5 → 3 → 1 → pool 0; crop 13 leaves 2, too small for the first 3×3 conv. A resize
# sets the side whatever the crop: 16 fits, 14 does not.
@pytest.mark.parametrize(
    ("crop", "resize", "refusal"),
    [
        (6, 0, None),
        (7, 0, "a smaller crop"),
        (13, 0, "a smaller crop"),
        (7, 16, None),
        (7, 14, "a larger resize"),
    ],
)
def test_the_feature_map_rule_starts_from_the_cropped_or_scaled_image(crop, resize, refusal):
    params = with_value("model.crop", crop)
    params["model"]["resize"] = resize
    if refusal is None:
        model = validate_params(params).model
        assert (model.crop, model.resize) == (crop, resize)
    else:
        with pytest.raises(StageError, match=rf"conv_blocks\[\d\] shrinks .* {refusal}"):
            validate_params(params)


def test_reference_architectures_are_expressible():
    blocks = [
        {"filters": 32, "kernel_size": 4, "pool": True, "dropout": 0.25},
        {"filters": 32, "kernel_size": 4, "pool": True, "dropout": 0.25},
    ]
    assert len(validate_params(with_value("model.conv_blocks", blocks)).model.conv_blocks) == 2


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(PROJECT / name, tmp_path / name)
    return tmp_path


def test_stage_gets_only_its_declared_sections(project_copy):
    params = load_params("train", project_copy)
    assert params.train.epochs == DEFAULTS["train"]["epochs"]
    assert params.model.batch_norm == DEFAULTS["model"]["batch_norm"]
    with pytest.raises(
        StageError, match=r"stage 'train' reads params section 'data', which dvc\.yaml"
    ):
        _ = params.data


def test_every_stage_declares_sections_that_exist():
    pipeline = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    for stage in pipeline["stages"]:
        assert set(declared_sections(stage, PROJECT)) <= set(Params.model_fields)


def test_dotted_declarations_are_refused(project_copy):
    pipeline = yaml.safe_load((project_copy / "dvc.yaml").read_text())
    pipeline["stages"]["train"]["params"] = ["train.epochs"]
    (project_copy / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    with pytest.raises(
        StageError, match=r"declares params 'train\.epochs'; declare whole sections"
    ):
        load_params("train", project_copy)


def test_missing_params_file(project_copy):
    (project_copy / "params.yaml").unlink()
    with pytest.raises(StageError, match=r"params\.yaml not found in"):
        load_params("plots", project_copy)


def test_yaml_syntax_error_names_the_line(project_copy):
    (project_copy / "params.yaml").write_text("train:\n  epochs: [1\n")
    with pytest.raises(StageError, match=r"params.yaml: invalid YAML at line 3"):
        load_params("plots", project_copy)


def test_stage_command_fails_in_one_line_before_any_work(tmp_path):
    """Through the CLI: one line on stderr, exit 1, and nothing written."""
    copy_project(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_value("train.optimizer", "foo")))
    before = files_in(tmp_path)
    result = run_stage(tmp_path, "download", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "download: error: params.yaml: train.optimizer: Input should be 'adam', 'adadelta', "
        "'sgd' or 'rmsprop' (got 'foo')"
    ]
    assert files_in(tmp_path) == before
