"""The config schema, declared once: what every config node may hold.

Each node of a composed run config (``conf/``) is a pydantic model here, keyed
by its ``_target_`` where a group holds several kinds; each range and choice is
written once, on its field, and the error a user sees is derived from it. Tables
that belong to a light module (the NumPy MLP's activations, the resampling
methods) are imported from it; Keras's own names are listed here, since importing
Keras takes seconds and validation runs before it.

The network's node takes its optimizer, initializer, regularizer, dropout and
trainer settings from their groups by interpolation (``optimizer: ${optimizer}``);
those fields are declared :func:`wired`, checked where they come from, and must
not be set on the model itself.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from src.data.resample import METHODS as RESAMPLE_METHODS
from src.errors import ConfigError
from src.models.numpy_activations import ACTIVATIONS as NUMPY_ACTIVATIONS

# --------------------------------------------------------------------- value types
Float = Annotated[float, AllowInfNan(False)]
Positive = Annotated[Float, Gt(0)]
NonNegative = Annotated[Float, Ge(0)]
Probability = Annotated[Float, Ge(0), Lt(1)]
PositiveInt = Annotated[int, Gt(0)]
Seed = Annotated[int, Ge(0)]
Text = Annotated[str, Field(pattern=r"\S")]
Resample = Literal[RESAMPLE_METHODS]  # type: ignore[valid-type]


def choice(*options: Any) -> Any:
    """One of ``options``, of the option's own type: a Literal alone takes ``true``
    for ``1`` (they compare equal, and it returns the option, not the input), which
    a mixed choice such as ``0, 1, 2`` or ``auto, true, false`` must refuse."""

    def same_type(value: Any) -> Any:
        if not any(value == option and type(value) is type(option) for option in options):
            raise PydanticCustomError("choice_type", "not one of the choices")
        return value

    return Annotated[Literal[options], BeforeValidator(same_type)]  # type: ignore[valid-type]

ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "selu")
Activation = Literal[ACTIVATIONS]  # type: ignore[valid-type]
OutputActivation = Literal[(*ACTIVATIONS, "softmax")]  # type: ignore[valid-type]
LOSSES_BY_TASK = {
    # The first loss of each task is the one used when trainer.loss is null.
    "binary": ("binary_crossentropy", "mse", "mae", "huber"),
    "multiclass": ("sparse_categorical_crossentropy", "categorical_crossentropy", "mse", "mae", "huber"),
    "regression": ("mse", "mae", "huber"),
}
Loss = Literal[tuple(dict.fromkeys(loss for losses in LOSSES_BY_TASK.values() for loss in losses))]  # type: ignore[misc]


def resolve_loss(loss: str | None, task: str) -> str:
    """The Keras loss for ``task``: ``loss`` if it fits the task, else the task's default.

    Raises:
        ConfigError: ``loss`` is set but does not fit the task.
    """
    allowed = LOSSES_BY_TASK[task]
    if loss is None:
        return allowed[0]
    if loss not in allowed:
        raise ConfigError(f"bad value trainer.loss={loss!r}: a {task} task takes one of {', '.join(allowed)}")
    return loss


class Node(BaseModel):
    """A config node: no key beyond its fields, no value converted but int to float.

    A field with a default may be left out; its value then comes from the
    constructor the node instantiates (the default here is never used: a
    validated config holds only the keys it was given).
    """

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


def target() -> Any:
    """The ``_target_`` field of a node kind, naming what it instantiates."""
    return Field(alias="_target_")


def wired(source: str) -> Any:
    """A model field interpolated from the config node at ``source`` (checked there)."""
    return Field(default=None, json_schema_extra={"wired": source})


# --------------------------------------------------------------------------- data
class Splits(Node):
    name: Text
    test_size: Annotated[Float, Gt(0), Lt(1)] = None
    val_size: Probability = None
    standardize: bool = None
    random_state: Seed = None
    resample: Resample = None

    @model_validator(mode="after")
    def _leaves_training_data(self) -> Splits:
        if (self.test_size or 0) + (self.val_size or 0) >= 1:
            raise ValueError(
                f"bad values data.test_size={self.test_size!r} and data.val_size={self.val_size!r}: "
                "together they must leave training data (sum < 1)"
            )
        return self


class Xor(Node):
    target_: Literal["src.data.toy.load_xor"] = target()
    name: Text
    resample: Resample = None


class BundledTable(Splits):
    target_: Literal["src.data.toy.load_iris", "src.data.toy.load_digits"] = target()


class IrisSetosa2d(Node):
    target_: Literal["src.data.toy.load_iris_setosa_2d"] = target()
    name: Text
    standardize: bool = None
    resample: Resample = None


class Images(Node):
    target_: Literal["src.data.images.load_images"] = target()
    name: Text
    dataset: Literal["mnist", "fashion_mnist"]
    dir: Text | None = None
    val_size: Probability = None
    train_limit: PositiveInt | None = None
    test_limit: PositiveInt | None = None
    random_state: Seed = None
    resample: Resample = None


class AutoMpg(Splits):
    target_: Literal["src.data.tables.load_auto_mpg"] = target()
    dir: Text | None = None


class Csv(Splits):
    target_: Literal["src.data.tables.load_csv"] = target()
    path: Text
    target: Text
    task: Literal["classification", "regression"] = None
    features: list[Text] | None = None


Data = Annotated[Union[Xor, BundledTable, IrisSetosa2d, Images, AutoMpg, Csv], Field(discriminator="target_")]


# ---------------------------------------------------------------------- optimizer
class _Optimizer(Node):
    partial_: Literal[True] = Field(alias="_partial_")
    learning_rate: Positive
    weight_decay: NonNegative | None = None
    clipnorm: Positive | None = None
    clipvalue: Positive | None = None
    epsilon: Positive = None


class Sgd(_Optimizer):
    target_: Literal["keras.optimizers.SGD"] = target()
    momentum: Probability = None
    nesterov: bool = None


class RmsProp(_Optimizer):
    target_: Literal["keras.optimizers.RMSprop"] = target()
    rho: Probability = None
    momentum: Probability = None
    centered: bool = None


class Adagrad(_Optimizer):
    target_: Literal["keras.optimizers.Adagrad"] = target()
    initial_accumulator_value: NonNegative = None


class Adam(_Optimizer):
    target_: Literal["keras.optimizers.Adam"] = target()
    beta_1: Probability = None
    beta_2: Probability = None
    amsgrad: bool = None


Optimizer = Annotated[Union[Sgd, RmsProp, Adagrad, Adam], Field(discriminator="target_")]


# ------------------------------------------------------------ init and regularizer
class SeededInit(Node):
    target_: Literal[
        "keras.initializers.GlorotUniform",
        "keras.initializers.GlorotNormal",
        "keras.initializers.HeNormal",
        "keras.initializers.HeUniform",
        "keras.initializers.LecunNormal",
    ] = target()
    partial_: Literal[True] = Field(alias="_partial_")
    seed: Seed | None = None


class RandomNormalInit(Node):
    target_: Literal["keras.initializers.RandomNormal"] = target()
    partial_: Literal[True] = Field(alias="_partial_")
    seed: Seed | None = None
    mean: Float = None
    stddev: Positive = None


class ZerosInit(Node):
    target_: Literal["keras.initializers.Zeros"] = target()
    partial_: Literal[True] = Field(alias="_partial_")


Initializer = Annotated[Union[SeededInit, RandomNormalInit, ZerosInit], Field(discriminator="target_")]


class NoPenalty(Node):
    target_: Literal["keras.regularizers.get"] = target()
    identifier: None = None


class L1(Node):
    target_: Literal["keras.regularizers.L1"] = target()
    l1: NonNegative


class L2(Node):
    target_: Literal["keras.regularizers.L2"] = target()
    l2: NonNegative


class L1L2(Node):
    target_: Literal["keras.regularizers.L1L2"] = target()
    l1: NonNegative
    l2: NonNegative


Regularizer = Annotated[Union[NoPenalty, L1, L2, L1L2], Field(discriminator="target_")]


class Dropout(Node):
    rate: Probability


# ------------------------------------------------------------------------ trainer
class EarlyStopping(Node):
    enabled: bool = None
    monitor: Text | None = None
    patience: Annotated[int, Ge(0)] = None
    min_delta: NonNegative = None
    restore_best_weights: bool = None


class Trainer(Node):
    epochs: PositiveInt
    batch_size: PositiveInt | None = None
    loss: Loss | None = None
    shuffle: bool = None
    verbose: choice(0, 1, 2) | None = None  # type: ignore[valid-type]
    engine: Literal["auto", "fit", "compiled"] = None
    jit_compile: choice("auto", True, False) = None  # type: ignore[valid-type]
    divergence_factor: Annotated[Float, Gt(1)] | None = None
    divergence_threshold: Positive | None = None
    early_stopping: EarlyStopping = None


# ------------------------------------------------------------------------- models
class KerasMLP(Node):
    target_: Literal["src.models.keras_mlp.KerasMLP"] = target()
    hidden_units: list[PositiveInt]
    activation: Activation
    output_activation: OutputActivation | None = None
    normalize: bool = None
    optimizer: Any = wired("optimizer")
    kernel_initializer: Any = wired("init")
    kernel_regularizer: Any = wired("regularizer")
    dropout_rate: Any = wired("dropout.rate")
    loss: Any = wired("trainer.loss")
    epochs: Any = wired("trainer.epochs")
    batch_size: Any = wired("trainer.batch_size")
    shuffle: Any = wired("trainer.shuffle")
    early_stopping: Any = wired("trainer.early_stopping")
    engine: Any = wired("trainer.engine")
    jit_compile: Any = wired("trainer.jit_compile")


NumpyActivation = Literal[NUMPY_ACTIVATIONS]  # type: ignore[valid-type]


class NumpyMLP(Node):
    target_: Literal["src.models.numpy_mlp.NumpyMLP"] = target()
    hidden_units: list[PositiveInt]
    activation: NumpyActivation
    output_activation: NumpyActivation | None = None
    use_bias: bool = None
    shuffle: bool = None
    learning_rate: Any = wired("optimizer.learning_rate")
    loss: Any = wired("trainer.loss")
    epochs: Any = wired("trainer.epochs")
    batch_size: Any = wired("trainer.batch_size")
    seed: Any = wired("seed")


Model = Annotated[Union[KerasMLP, NumpyMLP], Field(discriminator="target_")]


class Baseline(BaseModel):
    """A scikit-learn estimator; its own parameters are checked by scikit-learn."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)
    expected: ClassVar[str] = "a mapping with a _target_ such as sklearn.linear_model.Perceptron"
    target_: Text = target()


# ------------------------------------------------------------------- the rest
class Champion(Node):
    metric: Text
    direction: Literal["minimize", "maximize"]


class Tracking(Node):
    uri: Text
    artifact_location: Text | None = None
    log_models: bool = None
    plots: bool = None
    register_: bool = Field(None, alias="register")  # "register" would shadow ABCMeta.register
    registered_model: Text | None = None
    champion: Champion | None = None

    @model_validator(mode="after")
    def _registers_a_logged_model(self) -> Tracking:
        if self.register_ and self.log_models is False:
            raise ValueError("tracking.register=true registers the logged model: it needs tracking.log_models=true")
        return self


class Lesson(Node):
    kind: Literal["gd_quadratic"]
    start: Float
    minimum: Float
    offset: Float
    learning_rates: list[Positive]
    steps: PositiveInt


class RunConfig(Node):
    """A whole composed run config (``conf/config.yaml`` and its groups)."""

    experiment_name: Text
    description: Text | None
    lesson: Lesson | None
    seed: Seed
    data: Data
    model: Model
    optimizer: Optimizer
    dropout: Dropout
    init: Initializer
    regularizer: Regularizer
    trainer: Trainer
    baselines: dict[str, Baseline] | None
    tracking: Tracking
    # The metric(s) an hparams_search sweep optimizes (lightning-hydra-template's key);
    # src.sweeps.spec checks the names.
    optimized_metric: Text | list[Text] | None = None

    @model_validator(mode="after")
    def _numpy_mlp_trains_with_plain_sgd(self) -> RunConfig:
        if isinstance(self.model, NumpyMLP) and not (
            isinstance(self.optimizer, Sgd) and not self.optimizer.momentum and not self.optimizer.nesterov
        ):
            raise ValueError("model=numpy_mlp trains with plain SGD: use optimizer=sgd (no momentum)")
        return self


MODELS = {node.model_fields["target_"].annotation.__args__[0]: node for node in (KerasMLP, NumpyMLP)}


def wired_keys(model_target: str) -> dict[str, str]:
    """The model node's keys interpolated from other nodes, with each one's source."""
    node = MODELS[model_target]
    return {
        name: field.json_schema_extra["wired"]  # type: ignore[index]
        for name, field in node.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and "wired" in field.json_schema_extra
    }


# ---------------------------------------------------------------------- validation
def check(plain: Mapping[str, Any]) -> dict[str, Any]:
    """Checks a resolved run config against :class:`RunConfig`.

    Returns:
        The config as given, with the model's wired values taken from their
        sources (as checked there: an int learning rate becomes a float).

    Raises:
        ConfigError: one line naming the first bad value and what is allowed.
    """
    try:
        checked = RunConfig.model_validate(plain).model_dump(by_alias=True, exclude_unset=True)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc.errors()[0], plain)) from None
    model = checked["model"]
    for key, source in wired_keys(model["_target_"]).items():
        if key in model and model[key] != _at(plain, source):
            raise ConfigError(f"model.{key} comes from {source}: set {source}={model[key]!r} instead")
        model[key] = _at(checked, source)
    return checked


def _at(tree: Mapping[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def _one_line(error: Mapping[str, Any], plain: Mapping[str, Any]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "value_error":
        return re.sub(r"^Value error, ", "", error["msg"])
    path, annotation, parent = _walk(loc)
    dotted = ".".join(path)
    if kind == "extra_forbidden":
        where = f" in {'.'.join(path[:-1])}" if len(path) > 1 else ""
        return f"unknown config key {dotted}; allowed keys{where}: {', '.join(_keys(parent))}"
    if kind == "missing":
        return f"missing config value {dotted}"
    if kind == "union_tag_invalid":
        tags = error["ctx"]["expected_tags"].replace("'", "")
        return f"bad value {dotted}._target_={error['ctx']['tag']!r}: expected one of {tags}"
    return f"bad value {dotted}={_at(plain, dotted)!r}: expected {describe(annotation)}"


def _walk(loc: tuple[Any, ...]) -> tuple[list[str], Any, Any]:
    """The config path an error's ``loc`` names (a list item names its list), the
    annotation declared there, and the node that holds it."""
    path: list[str] = []
    annotation: Any = RunConfig
    parent: Any = RunConfig
    for part in loc:
        annotation = _bare(annotation)
        members = _members(annotation)
        if members and isinstance(part, str) and part in members:  # a tagged union's tag
            annotation = members[part]
            continue
        if isinstance(part, int):  # an item of a list: the list is what is reported
            break
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            parent = annotation
            field = next((f for n, f in annotation.model_fields.items() if (f.alias or n) == part), None)
            annotation = Any if field is None else _annotated(field)
        elif typing.get_origin(annotation) is dict:
            parent, annotation = annotation, typing.get_args(annotation)[1]
        path.append(str(part))
    return path, annotation, parent


def _annotated(field: Any) -> Any:
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def _bare(annotation: Any) -> Any:
    """``annotation`` without its ``None`` and its constraints (to walk into)."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif _is_union(annotation):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _members(annotation: Any) -> dict[str, type[BaseModel]]:
    """A tagged union's node kinds by ``_target_``."""
    if not _is_union(annotation):
        return {}
    found = {}
    for member in typing.get_args(annotation):
        field = getattr(member, "model_fields", {}).get("target_")
        if field is not None and typing.get_origin(field.annotation) is Literal:
            found.update({tag: member for tag in typing.get_args(field.annotation)})
    return found


def _keys(node: Any) -> list[str]:
    if isinstance(node, type) and issubclass(node, BaseModel):
        return sorted(field.alias or name for name, field in node.model_fields.items())
    return []


def describe(annotation: Any) -> str:
    """What a declared annotation allows, in words (``an integer > 0``)."""
    constraints: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *meta = typing.get_args(annotation)
        constraints = [*meta, *constraints]
    if _is_union(annotation):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if _members(annotation):
            return "a mapping with one of the _target_ values " + ", ".join(_members(annotation))
        text = " or ".join(describe(a) for a in options)
        return f"null or {text}" if len(options) < len(typing.get_args(annotation)) else text
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    if typing.get_origin(annotation) is list:
        return "a list of " + re.sub(r"^an? (\w+)", r"\1s", describe(typing.get_args(annotation)[0]))
    if typing.get_origin(annotation) is dict:
        return "a mapping of names to " + re.sub(r"^an? ", "", describe(typing.get_args(annotation)[1]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return getattr(annotation, "expected", "a mapping")
    kind = {bool: "true or false", int: "an integer", float: "a finite number", str: "a non-empty string"}
    bounds = [
        f"{op} {_number(getattr(c, attr))}"
        for c in constraints
        for op, attr, cls in ((">", "gt", Gt), (">=", "ge", Ge), ("<", "lt", Lt), ("<=", "le", Le))
        if isinstance(c, cls)
    ]
    return " ".join([kind.get(annotation, "a value"), " and ".join(bounds)]).strip()


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and math.isfinite(value) else str(value)
