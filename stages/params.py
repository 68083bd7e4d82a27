"""`params.yaml`: its schema, and the only way a stage reads it.

`load_params(stage)` validates the whole file (so a typo anywhere stops the pipeline before any
work) and hands the stage only the sections that `dvc.yaml` declares for it. Reading any other
section is an error, so a stage cannot depend on a param that DVC does not track for it and
silently skip re-running when that param changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stages.common import StageError

PARAMS_FILE = "params.yaml"
PIPELINE_FILE = "dvc.yaml"
# MNIST's images are 28×28 (the one definition: `dataset.IMAGE_SHAPE` adds the channel axis).
IMAGE_SIZE = 28

# YAML 1.1 reads `1e-3` as a string, so floats alone are coerced from numeric strings.
Float = Annotated[float, Field(strict=False, allow_inf_nan=False)]
Probability = Annotated[float, Field(strict=False, ge=0.0, lt=1.0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataParams(Section):
    url: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    timeout: Float = Field(gt=0, le=600)
    retries: int = Field(ge=0, le=10)


class PreprocessParams(Section):
    validation_size: int = Field(ge=1)
    seed: int = Field(ge=0)


class ConvBlock(Section):
    filters: int = Field(ge=1, le=1024)
    kernel_size: int = Field(ge=1, le=IMAGE_SIZE)
    padding: Literal["valid", "same"] = "valid"
    strides: int = Field(default=1, ge=1, le=IMAGE_SIZE)
    pool: bool = False
    dropout: Probability = 0.0
    separable: bool = False


class DenseLayer(Section):
    units: int = Field(ge=1, le=65536)
    dropout: Probability = 0.0


class ModelParams(Section):
    # Pixels cut from each border of the image before the first conv; it leaves at least 1×1.
    crop: int = Field(default=0, ge=0, le=(IMAGE_SIZE - 1) // 2)
    # Side in pixels the (cropped) image is scaled to before the first conv; 0 = not scaled.
    resize: int = Field(default=0, ge=0, le=IMAGE_SIZE)
    conv_blocks: list[ConvBlock]
    dense: list[DenseLayer]
    batch_norm: bool
    tta: Literal["none", "cross", "grid"]

    @model_validator(mode="after")
    def _feature_map_not_empty(self) -> ModelParams:
        size = self.resize or IMAGE_SIZE - 2 * self.crop
        for index, block in enumerate(self.conv_blocks):
            if block.padding == "valid":
                size = (size - block.kernel_size) // block.strides + 1
            else:
                size = -(-size // block.strides)
            if block.pool:
                size //= 2
            if size < 1:
                raise ValueError(
                    f"conv_blocks[{index}] shrinks the feature map below 1x1; "
                    "use padding: same, a smaller kernel_size or strides, fewer pool: true, "
                    "or a smaller crop or a larger resize"
                )
        return self


class TrainParams(Section):
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=65536)
    optimizer: Literal["adam", "adadelta", "sgd", "rmsprop"]
    learning_rate: Float = Field(gt=0, le=10)
    lr_schedule: Literal["constant", "cosine", "one_cycle"]
    warmup_epochs: int = Field(ge=0)
    weight_decay: Float = Field(ge=0, le=1)
    augment_shift: Float = Field(ge=0, le=0.5)
    augment_rotation: Float = Field(ge=0, le=180)
    augment_zoom: Float = Field(ge=0, lt=1)
    augment_elastic: Float = Field(ge=0, le=100)
    seed: int = Field(ge=0, le=2**32 - 1)
    deterministic: bool
    early_stopping_patience: int = Field(ge=0)
    ema_momentum: Float = Field(ge=0, lt=1)
    ensemble_size: int = Field(ge=1, le=100)
    distribute: Literal["none", "mirrored", "multi_worker"]
    precision: Literal["auto", "float32", "mixed_bfloat16"]

    @model_validator(mode="after")
    def _warmup_shorter_than_training(self) -> TrainParams:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs})"
            )
        return self

    @model_validator(mode="after")
    def _one_cycle_with_adam(self) -> TrainParams:
        # The cycled momentum is Adam's beta_1; the other optimizers have none by that name.
        if self.lr_schedule == "one_cycle" and self.optimizer != "adam":
            raise ValueError(f"lr_schedule one_cycle needs optimizer adam, not {self.optimizer}")
        return self

    @model_validator(mode="after")
    def _weight_average_or_early_stopping(self) -> TrainParams:
        # Early stopping restores the best epoch's own weights, which would discard the average.
        if self.ema_momentum and self.early_stopping_patience:
            raise ValueError(
                "ema_momentum and early_stopping_patience cannot both be on: early stopping "
                "restores the best epoch's own weights, not their average"
            )
        return self

    @model_validator(mode="after")
    def _member_seeds_in_range(self) -> TrainParams:
        # Ensemble member i (from 0) trains with seed + i.
        if self.seed + self.ensemble_size - 1 > 2**32 - 1:
            raise ValueError(f"seed + ensemble_size - 1 must be at most {2**32 - 1}")
        return self


class EvaluateParams(Section):
    batch_size: int = Field(ge=1, le=65536)


class PlotsParams(Section):
    dpi: int = Field(ge=10, le=1000)
    width: Float = Field(gt=0, le=50)
    height: Float = Field(gt=0, le=50)


class GateParams(Section):
    min_test_accuracy: Float = Field(ge=0, le=1)
    max_test_accuracy_drop: Float = Field(ge=0, le=1)
    max_test_loss: Float = Field(gt=0)
    max_test_loss_rise: Float = Field(ge=0)


class Params(Section):
    data: DataParams
    preprocess: PreprocessParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    plots: PlotsParams
    gate: GateParams


# Commands that are not pipeline stages, and the sections they read. No stage declares these
# sections, so editing them re-runs nothing.
COMMAND_SECTIONS = {"gate": ["gate"]}


class StageParams:
    """The params sections one stage declared in `dvc.yaml`; any other section is off limits."""

    def __init__(self, stage: str, sections: dict[str, Section]) -> None:
        self._stage = stage
        self._sections = sections

    def __getattr__(self, name: str) -> Section:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._sections[name]
        except KeyError:
            raise StageError(
                f"stage '{self._stage}' reads params section '{name}', which {PIPELINE_FILE} "
                f"does not declare for it (declared: {', '.join(self._sections) or 'none'})"
            ) from None


def load_params(stage: str, root: str | Path = ".") -> StageParams:
    """Validate `params.yaml` and return the sections `dvc.yaml` declares for `stage` (for a
    command that is not a stage, the sections `COMMAND_SECTIONS` gives it)."""
    root = Path(root)
    params = validate_params(_read_yaml(root / PARAMS_FILE))
    names = COMMAND_SECTIONS.get(stage) or declared_sections(stage, root)
    sections = {name: getattr(params, name) for name in names}
    return StageParams(stage, sections)


def declared_sections(stage: str, root: str | Path = ".") -> list[str]:
    """The params sections listed under `stages.<stage>.params` in `dvc.yaml`."""
    pipeline = _read_yaml(Path(root) / PIPELINE_FILE)
    try:
        declared = pipeline["stages"][stage].get("params", [])
    except (KeyError, TypeError, AttributeError):
        raise StageError(f"{PIPELINE_FILE} has no stage '{stage}'") from None
    for name in declared:
        if name not in Params.model_fields:
            raise StageError(
                f"{PIPELINE_FILE}: stage '{stage}' declares params '{name}'; declare whole "
                f"sections of {PARAMS_FILE}: {', '.join(Params.model_fields)}"
            )
    return list(declared)


def validate_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise StageError(f"{PARAMS_FILE}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe(problem) for problem in error.errors())
        raise StageError(f"{PARAMS_FILE}: {problems}") from None


def _read_yaml(path: Path) -> Any:
    try:
        with path.open() as file:
            return yaml.safe_load(file)
    except FileNotFoundError:
        raise StageError(f"{path.name} not found in {path.parent.resolve()}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        cause = getattr(error, "problem", None) or str(error)
        raise StageError(f"{path.name}: invalid YAML{where}: {cause}") from None


def _describe(problem: dict[str, Any]) -> str:
    location = problem["loc"]
    key = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part) for part in location
    ).replace(".[", "[")
    if problem["type"] == "extra_forbidden":
        allowed = ", ".join(_fields_at(location[:-1]))
        return f"{key}: unknown key (allowed: {allowed})"
    if problem["type"] == "missing":
        return f"{key}: missing"
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "value_error":
        return f"{key}: {message}" if key else message
    return f"{key}: {message} (got {problem['input']!r})"


def _fields_at(location: tuple[str | int, ...]) -> list[str]:
    """Names of the keys allowed at `location` in the schema (list indices skipped)."""
    model: type[BaseModel] = Params
    for part in location:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = getattr(annotation, "__args__", (annotation,))[0]
    return list(model.model_fields)
