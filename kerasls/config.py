"""The config schema: every default in one place, every unknown key an error that names the key.

A project's `config.yaml` is read with `yaml.safe_load`, command-line overrides `section.key=value` are merged
into it (values parsed as YAML, so `training.epochs=3` is an int and `data.test=null` is None), and the result
is validated by the pydantic models below (reading and merging: `kerasls.config_files`).
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kerasls import config_files
from kerasls.config_files import apply_overrides, dump_config, parse_override, read_yaml  # noqa: F401 (re-exported)
from kerasls.encoder_settings import EncoderSettings
from kerasls.errors import KeraslsError  # noqa: F401 (re-exported: callers catch it from here)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeatureColumns(_Section):
    numeric: list[str] = []
    categorical: list[str] = []
    text: list[str] = []

    def all_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.text]


class TextSettings(_Section):
    """How a text column becomes features: TF-IDF over word and character n-grams (`kerasls.text_features`)."""

    ngrams: int = Field(2, ge=0, le=5)  # word n-grams of 1..ngrams tokens; 0 = no word features
    char_ngrams: Optional[tuple[int, int]] = (2, 5)  # [min, max] characters within word boundaries; null = none
    max_tokens: int = Field(10000, ge=10)  # size of each vocabulary (word n-grams; character n-grams)
    sublinear_tf: bool = True  # 1 + ln(tf) instead of tf
    # a pretrained KerasHub encoder instead of the n-grams (kerasls.encoder_settings); null = TF-IDF n-grams
    encoder: Optional[EncoderSettings] = None

    @model_validator(mode="after")
    def _some_features(self):
        check_text_settings(self.ngrams, self.char_ngrams)
        return self


def check_text_settings(ngrams, char_ngrams) -> None:
    """A ValueError naming the setting when a text column would get no features or impossible n-gram lengths
    (the config's check, and `text_features.TextTfidf`'s for direct use)."""
    if ngrams < 0:
        raise ValueError(f"ngrams must be >= 0; received {ngrams}")
    if ngrams == 0 and not char_ngrams:
        raise ValueError("ngrams: 0 and char_ngrams: null leave a text column without features; "
                         "set ngrams >= 1 or char_ngrams: [2, 5]")
    if char_ngrams and not 1 <= char_ngrams[0] <= char_ngrams[1] <= 10:
        raise ValueError(f"char_ngrams must be [min, max] with 1 <= min <= max <= 10; received {list(char_ngrams)}")


class TextConfig(TextSettings):
    columns: dict[str, dict] = {}  # per-column overrides, e.g. {subject: {ngrams: 1, char_ngrams: null}}

    @model_validator(mode="after")
    def _valid_overrides(self):
        for name in self.columns:
            self.settings(name)
        return self

    def settings(self, column: str) -> TextSettings:
        """The settings of text column `column`: these defaults with its entry in `columns` on top."""
        defaults = self.model_dump(exclude={"columns"})
        override = self.columns.get(column) or {}
        merged = {**defaults, **override}
        if isinstance(defaults["encoder"], dict) and isinstance(override.get("encoder"), dict):
            merged["encoder"] = {**defaults["encoder"], **override["encoder"]}  # e.g. only another sequence_length
        try:
            return TextSettings.model_validate(merged)
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"columns.{column}{'.' + key if key else ''}: {message}") from None

    def encoders(self, columns) -> dict:
        """{text column: EncoderSettings} of the `columns` that use a pretrained encoder."""
        return {name: self.settings(name).encoder for name in columns if self.settings(name).encoder is not None}


class DataConfig(_Section):
    train: str = "data/train.csv"
    val: Optional[str] = None
    test: Optional[str] = None
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    label: str = "intent"
    features: Optional[FeatureColumns] = None
    text: TextConfig = TextConfig()
    # streaming: read the tables in chunks of `chunk_rows` rows instead of whole (files larger than memory);
    # see kerasls.data.streaming for what changes (seeded per-row val split, shuffling within chunks).
    streaming: bool = False
    chunk_rows: int = Field(65536, ge=1)
    # rows with this label are never a class: uniform targets in training (outlier exposure), out-of-scope rows
    # for choosing calibration.abstain's threshold and for the decision metrics
    out_of_scope_label: Optional[str] = None


class SoftLabelsConfig(_Section):
    """Where soft targets come from: exactly one of probabilities, votes or teacher.

    probabilities / votes: a list of `prob_<class>` / `votes_<class>` columns, or a mapping {class: column}.
    teacher: an export (`runs/<run>/export`) whose softened outputs q_T = softmax(z_t / T) join the hard label in
    the loss α · CE(hard smoothed by ε, softmax(z)) + (1 − α) · T² · KL(q_T ‖ softmax(z / T)) (Hinton et al.
    2015; `kerasls.losses`). This equals training on the mixed target α · hard + (1 − α) · q_T only at T = 1.
    """

    probabilities: Optional[Union[list[str], dict[str, str]]] = None
    votes: Optional[Union[list[str], dict[str, str]]] = None
    vote_smoothing: float = Field(0.0, ge=0.0)  # add-α for vote counts: (c + α) / (Σc + Kα)
    teacher: Optional[str] = None
    temperature: float = Field(4.0, gt=0.0)  # T of the teacher's softmax (teacher only)
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the hard label (teacher only)

    @model_validator(mode="after")
    def _one_source(self):
        sources = [name for name in ("probabilities", "votes", "teacher") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(
                "must name exactly one source: {probabilities: [cols]}, {votes: [cols]} or "
                f"{{teacher: EXPORT, temperature: T, alpha: a}}. Received: {sources or 'none'}"
            )
        return self

    @property
    def source(self) -> str:
        return "probabilities" if self.probabilities else "votes" if self.votes else "teacher"

    def columns(self) -> list[str]:
        """The table columns holding probabilities or votes (none for a teacher)."""
        named = self.probabilities or self.votes or []
        return list(named.values()) if isinstance(named, dict) else list(named)


class TargetsConfig(_Section):
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    prior: Literal["uniform", "class_prior"] = "uniform"
    soft_labels: Optional[SoftLabelsConfig] = None


class TabularModelConfig(_Section):
    hidden_units: list[int] = [128, 64]
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    freeze_backbone: bool = False  # with a text encoder: train only the head for training.epochs ...
    fine_tune_epochs: int = Field(0, ge=0)  # ... then unfreeze it and train this many more epochs
    fine_tune_learning_rate: float = Field(2e-5, gt=0.0)
    options: dict[str, Any] = {}  # free-form keys for a model.py the user extended


class TrainingConfig(_Section):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    learning_rate: float = Field(1e-3, gt=0.0)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decay to 0 over the epochs, after warm-up
    warmup_epochs: int = Field(0, ge=0)  # linear warm-up from 0 (cosine schedule only)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD only
    weight_decay: float = Field(1e-4, ge=0.0)
    early_stopping: int = Field(5, ge=0)  # patience in epochs on val NLL; 0 turns it off
    mixed_precision: bool = False
    jit_compile: Union[Literal["auto"], bool] = "auto"
    # auto: all local GPUs when there are several | one_device | mirrored: all local GPUs | multi_worker: the
    # workers of the TF_CONFIG environment variable (kerasls.distributed; the chief writes runs/<name>/)
    distribute: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    # op determinism: the same seed and config give the same numbers; measured cost on CPU about 0 (both
    # templates, README "Reliability"); on a GPU it also turns off auto XLA
    deterministic: bool = True
    verbose: Literal[0, 1, 2] = 1

    @model_validator(mode="after")
    def _warmup_needs_a_schedule(self):
        if self.warmup_epochs and self.lr_schedule == "constant":
            raise ValueError(f"training.warmup_epochs={self.warmup_epochs} needs training.lr_schedule: cosine "
                             "(warm-up ramps into the schedule)")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"training.warmup_epochs={self.warmup_epochs} must be below training.epochs="
                             f"{self.epochs}")
        return self


class ConformalConfig(_Section):
    """Split conformal prediction sets fitted on the validation rows (kerasls.conformal says how each score works)."""

    score: Literal["lac", "aps", "raps"] = "lac"
    alpha: float = Field(0.1, gt=0.0, lt=1.0)  # a set holds the true class for at least 1 − alpha of new rows
    raps_lambda: float = Field(0.01, ge=0.0)  # raps only: λ, the penalty per rank beyond raps_k_reg
    raps_k_reg: int = Field(1, ge=0)  # raps only: ranks up to this one are not penalised


class CostsConfig(_Section):
    """What a wrong answer and an abstention cost, for choosing the confidence threshold (kerasls.decisions)."""

    wrong_answer: float = Field(1.0, gt=0.0)  # an in-scope row answered wrongly, or an out-of-scope row answered
    abstention: float = Field(1.0, ge=0.0)  # an in-scope row handed over instead of answered


class AbstainConfig(_Section):
    """When the export abstains instead of naming a class (kerasls.decisions says how each rule chooses)."""

    rule: Literal["confidence", "conformal"] = "confidence"
    label: str = Field("out_of_scope", min_length=1)  # the export's `decision` for an abstained row
    costs: Optional[CostsConfig] = None  # confidence rule: minimise these costs instead of the default choice


class CalibrationConfig(_Section):
    temperature_scaling: bool = True
    # what T minimises on the validation rows: auto = the soft cross-entropy to their distributions when they carry
    # them (probability or vote columns), else the NLL of their observed classes; soft / hard force one
    fit_on: Literal["auto", "soft", "hard"] = "auto"
    bins: int = Field(15, ge=1)
    target_accuracy: float = Field(0.95, gt=0.0, le=1.0)
    conformal: Optional[ConformalConfig] = ConformalConfig()  # prediction sets; null turns them off
    abstain: Optional[AbstainConfig] = None  # decisions: answer a class or abstain; null: always a class

    @model_validator(mode="after")
    def _conformal_rule_has_lac_sets(self):
        if self.abstain is not None and self.abstain.rule == "conformal" and (
                self.conformal is None or self.conformal.score != "lac"):
            score = "null" if self.conformal is None else self.conformal.score
            raise ValueError("calibration.abstain.rule: conformal abstains when a row's LAC prediction set is empty, "
                             f"but calibration.conformal is {score}: set calibration.conformal.score: lac (aps and "
                             "raps sets are never empty), or calibration.abstain.rule: confidence")
        return self


class ExportConfig(_Section):
    enabled: bool = True


class _RunSection(_Section):
    """What both templates' configs check across sections."""

    @model_validator(mode="after")
    def _out_of_scope_rows_have_labels(self):
        soft = self.targets.soft_labels
        if self.data.out_of_scope_label is not None and soft is not None and soft.source != "teacher":
            raise ValueError(f"data.out_of_scope_label marks rows by their label, and targets.soft_labels."
                             f"{soft.source} gives rows distributions over the classes instead: use hard labels "
                             "(targets.soft_labels: null) or a teacher, or data.out_of_scope_label: null")
        return self

    @model_validator(mode="after")
    def _fit_on_has_distributions(self):
        soft = self.targets.soft_labels
        if self.calibration.fit_on == "soft" and (soft is None or soft.source == "teacher"):
            raise ValueError("calibration.fit_on is soft, which needs validation rows with distributions: set "
                             "targets.soft_labels.probabilities or .votes, or calibration.fit_on: auto or hard")
        return self


class TabularConfig(_RunSection):
    seed: int = 42
    data: DataConfig = DataConfig()
    targets: TargetsConfig = TargetsConfig()
    model: TabularModelConfig = TabularModelConfig()
    training: TrainingConfig = TrainingConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _phases_need_an_encoder(self):
        text = self.data.text
        if self.model.freeze_backbone and text.encoder is None and not any(
                (override or {}).get("encoder") for override in text.columns.values()):
            raise ValueError("model.freeze_backbone freezes a text encoder, and no column has one: set "
                             "data.text.encoder, or model.freeze_backbone: false")
        return self

    @model_validator(mode="after")
    def _label_is_not_a_feature(self):
        features = self.data.features
        if features is not None and self.data.label in features.all_columns():
            raise ValueError(
                f"data.features lists the label column {self.data.label!r}: remove it from the features"
            )
        return self


class ImageDataConfig(_Section):
    train: str = "data/train"  # a folder of class folders, or a CSV manifest (path,label[,prob_*|votes_*])
    val: Optional[str] = None
    test: Optional[str] = None
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    image_size: tuple[int, int] = (32, 32)  # (height, width) every image is resized to
    channels: Literal[1, 3] = 3
    cache: bool = True  # keep decoded images in memory after the first epoch
    skip_corrupt: bool = False  # drop unreadable images (with a count) instead of stopping
    path_column: str = "path"
    label_column: str = "label"
    out_of_scope_label: Optional[str] = None  # a class folder or manifest label that is never a class (see tables)

    @field_validator("image_size")
    @classmethod
    def _image_size_is_positive(cls, value):
        if min(value) < 8:
            raise ValueError(f"image_size must be at least [8, 8]. Received: {list(value)}")
        return value


class MixConfig(_Section):
    alpha: float = Field(0.2, gt=0.0)  # Beta(α, α) for MixUp; CutMix's `factor`
    probability: float = Field(0.0, ge=0.0, le=1.0)  # share of training batches mixed; 0 turns it off


class AugmentConfig(_Section):
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"
    rotation: float = Field(0.0, ge=0.0, le=0.5)  # fraction of a full turn, as keras.layers.RandomRotation
    zoom: float = Field(0.0, ge=0.0, lt=1.0)
    rand_augment: bool = False
    mixup: MixConfig = MixConfig(alpha=0.2)
    cutmix: MixConfig = MixConfig(alpha=1.0)

    @model_validator(mode="after")
    def _mix_probabilities_add_up(self):
        total = self.mixup.probability + self.cutmix.probability
        if total > 1.0:
            raise ValueError(
                f"augment.mixup.probability + augment.cutmix.probability must be <= 1. Received: {total:g}"
            )
        return self


# The model constructors of keras.applications in Keras 3.15 (tests/test_config.py compares this list with the
# installed Keras), so that a misspelt `model.backbone` is refused with the config, before TensorFlow loads.
KERAS_APPLICATIONS = (
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge", "DenseNet121", "DenseNet169",
    "DenseNet201", "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4",
    "EfficientNetB5", "EfficientNetB6", "EfficientNetB7", "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2",
    "EfficientNetV2B3", "EfficientNetV2L", "EfficientNetV2M", "EfficientNetV2S", "InceptionResNetV2", "InceptionV3",
    "MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small", "NASNetLarge", "NASNetMobile", "ResNet101",
    "ResNet101V2", "ResNet152", "ResNet152V2", "ResNet50", "ResNet50V2", "VGG16", "VGG19", "Xception",
)
SUGGESTED_BACKBONES = ("small_cnn", "EfficientNetV2B0", "MobileNetV3Small", "ResNet50")  # README's; errors list them


class ImageModelConfig(_Section):
    backbone: str = "small_cnn"  # small_cnn | EfficientNetV2B0 | MobileNetV3Small | ResNet50 | other keras.applications
    weights: Optional[str] = None  # null (random), a local weights file, or "imagenet" (downloads)
    filters: list[int] = [32, 64, 128]  # small_cnn only
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    freeze_backbone: bool = False  # train only the head for training.epochs ...
    fine_tune_epochs: int = Field(0, ge=0)  # ... then unfreeze and train this many more epochs
    fine_tune_learning_rate: float = Field(1e-5, gt=0.0)
    options: dict[str, Any] = {}

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value):
        if value != "small_cnn" and value not in KERAS_APPLICATIONS:
            by_lower = {name.lower(): name for name in ("small_cnn", *KERAS_APPLICATIONS)}
            close = difflib.get_close_matches(value.lower(), by_lower, n=1, cutoff=0.7)
            hint = f"did you mean {by_lower[close[0]]!r}? " if close else ""
            raise ValueError(f"not small_cnn or a keras.applications model; {hint}try one of "
                             f"{', '.join(SUGGESTED_BACKBONES)} (or another keras.applications name). "
                             f"Received: {value!r}")
        return value


class ImageConfig(_RunSection):
    seed: int = 42
    data: ImageDataConfig = ImageDataConfig()
    augment: AugmentConfig = AugmentConfig()
    targets: TargetsConfig = TargetsConfig()
    model: ImageModelConfig = ImageModelConfig()
    training: TrainingConfig = TrainingConfig(epochs=20, batch_size=64)
    calibration: CalibrationConfig = CalibrationConfig()
    export: ExportConfig = ExportConfig()


SCHEMAS = {"tabular": TabularConfig, "image": ImageConfig}


# ---------------------------------------------------------------------------------------------------------------
# Reading (kerasls.config_files), with TabularConfig as the default schema


def build_config(raw: dict, schema: type[BaseModel] = TabularConfig, source: str = "config"):
    return config_files.build_config(raw, schema, source)


def load_config(path=None, overrides=(), schema: type[BaseModel] = TabularConfig):
    """Read `path` (or only defaults when None), merge `key=value` overrides, validate."""
    return config_files.load_config(path, overrides, schema)
