"""`data.text.encoder`: a pretrained KerasHub text encoder for a text column, checked before TensorFlow loads.

    data:
      text:
        encoder: {preset: bert_small_en_uncased, sequence_length: 128, trainable: true, lora_rank: null}
        columns: {subject: {encoder: null}}      # per column: this one keeps TF-IDF n-grams

`preset` is a KerasHub preset name (downloaded on first use and cached by KerasHub), a handle (`hf://...`,
`kaggle://...`), or a local preset folder (what `backbone.save_to_preset(folder)` and
`tokenizer.save_to_preset(folder)` write; the offline way). The checks here read no weights and import neither
TensorFlow nor KerasHub, so a misspelt name costs a fraction of a second (`kerasls.text_encoder` loads presets).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kerasls.errors import KeraslsError

# The presets of `keras_hub.models.TextClassifier.presets` in keras-hub 0.32 (tests/test_text_encoder.py compares
# this list with the installed KerasHub): the names KerasHub can load as a text classifier's backbone.
KERAS_HUB_TEXT_PRESETS = (
    "albert_base_en_uncased", "albert_extra_extra_large_en_uncased", "albert_extra_large_en_uncased",
    "albert_large_en_uncased", "all_minilm_l12_v2_en", "all_minilm_l6_v1_en", "all_minilm_l6_v2_en", "bert_base_en",
    "bert_base_en_uncased", "bert_base_multi", "bert_base_zh", "bert_large_en", "bert_large_en_uncased",
    "bert_medium_en_uncased", "bert_small_en_uncased", "bert_tiny_en_uncased", "bert_tiny_en_uncased_sst2",
    "bge_base_en", "bge_base_v1.5_en", "bge_base_v1.5_zh", "bge_base_zh", "bge_large_en", "bge_large_v1.5_en",
    "bge_large_v1.5_zh", "bge_large_zh", "bge_llm_embedder", "bge_m3", "bge_small_en", "bge_small_v1.5_en",
    "bge_small_v1.5_zh", "deberta_v3_base_en", "deberta_v3_base_multi", "deberta_v3_extra_small_en",
    "deberta_v3_large_en", "deberta_v3_small_en", "distil_bert_base_en", "distil_bert_base_en_uncased",
    "distil_bert_base_multi", "esm2_t12_35M", "esm2_t30_150M", "esm2_t33_650M", "esm2_t6_8M", "f_net_base_en",
    "f_net_large_en", "msmarco_minilm_l12_cos_v5_en", "msmarco_minilm_l6_cos_v5_en", "multi_qa_minilm_l6_cos_v1_en",
    "multi_qa_minilm_l6_dot_v1_en", "multilingual_e5_base", "multilingual_e5_large", "multilingual_e5_small",
    "mxbai_embed_2d_large_v1_en", "mxbai_embed_large_v1_en", "mxbai_embed_xsmall_v1_en", "paraphrase_minilm_l12_v2_en",
    "paraphrase_minilm_l3_v2_en", "paraphrase_minilm_l6_v2_en", "roberta_base_en", "roberta_large_en",
    "xlm_roberta_base_multi", "xlm_roberta_large_multi",
)
SUGGESTED_PRESETS = ("bert_tiny_en_uncased", "bert_small_en_uncased", "deberta_v3_small_en", "roberta_base_en")
# KerasHub preset families of decoder-only language models: no text classifier in KerasHub 0.32
DECODER_ONLY = ("gpt2", "gpt_neo", "gemma", "llama", "mistral", "mixtral", "phi", "qwen", "opt_", "bloom", "falcon",
                "smollm")
PRESET_HANDLES = ("hf://", "kaggle://", "modelscope://", "gs://")
INSTALL_HINT = 'pip install "kerasls[encoders]" (keras-hub and tensorflow-text; Linux x86_64 and macOS arm64)'


class EncoderSettings(BaseModel):
    """One text column's pretrained encoder (`kerasls.text_encoder.TextEncoder` builds it)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: str  # a KerasHub preset name, an hf:// or kaggle:// handle, or a local preset folder
    sequence_length: int = Field(128, ge=4)  # tokens per text, [CLS]/[SEP] included; longer texts are truncated
    trainable: bool = True  # false: the encoder stays frozen, only the head trains
    lora_rank: Optional[int] = Field(None, ge=1)  # r: backbone.enable_lora(r), only the adapters and the head train

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value):
        return check_preset(value)

    @model_validator(mode="after")
    def _lora_trains(self):
        if self.lora_rank and not self.trainable:
            raise ValueError(f"lora_rank={self.lora_rank} trains adapters, trainable: false trains nothing of the "
                             "encoder: set one of them (trainable: true with lora_rank, or lora_rank: null)")
        return self


def check_preset(value: str) -> str:
    """`value` if KerasHub can be asked for it (a known name, a handle, a folder holding a preset), else a
    ValueError with the closest name."""
    if value in KERAS_HUB_TEXT_PRESETS or value.startswith(PRESET_HANDLES):
        return value
    folder = Path(value).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ValueError(f"{value}: a folder without config.json is not a KerasHub preset; save one with "
                             "backbone.save_to_preset(folder) and tokenizer.save_to_preset(folder)")
        return str(folder.resolve())
    if value.lower().startswith(DECODER_ONLY):
        raise ValueError(f"{value!r} looks like a decoder-only language model preset; KerasHub 0.32 has no text "
                         f"classifier for those: use an encoder such as {', '.join(SUGGESTED_PRESETS)}")
    if value.startswith((".", "/", "~")) or "/" in value or "\\" in value:
        raise ValueError(f"preset folder {value!r} not found; give an existing folder written by save_to_preset, or a "
                         "KerasHub preset name")
    close = difflib.get_close_matches(value.lower(), KERAS_HUB_TEXT_PRESETS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"not a KerasHub text-classifier preset, an hf:// handle or a preset folder; {hint}try one of "
                     f"{', '.join(SUGGESTED_PRESETS)}. Received: {value!r}")


def check_folder_sequence_length(settings: EncoderSettings, column: str) -> None:
    """A folder preset's backbone has a fixed number of positions: a longer `sequence_length` is refused here,
    before TensorFlow (KerasHub's packers default to 512, past a small backbone's position embeddings)."""
    config_file = Path(settings.preset) / "config.json"
    if not config_file.is_file():
        return
    try:
        positions = json.loads(config_file.read_text(encoding="utf-8"))["config"].get("max_sequence_length")
    except (ValueError, KeyError, TypeError, AttributeError):
        return  # KerasHub reports an unreadable preset when it loads it
    if isinstance(positions, int) and settings.sequence_length > positions:
        raise sequence_length_error(settings, column, positions)


def sequence_length_error(settings: EncoderSettings, column: str, positions: int) -> KeraslsError:
    return KeraslsError(f"data.text.encoder.sequence_length={settings.sequence_length} (column {column!r}) is longer "
                        f"than the {positions} positions of {settings.preset}; set sequence_length <= {positions}")


def encoders_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("keras_hub", "tensorflow_text"))


def check_encoders_available(encoders: dict) -> None:
    """{column: EncoderSettings} -> one line saying how to install the extra when a column needs it and it is
    missing; the folder presets' sequence lengths."""
    if not encoders:
        return
    if not encoders_installed():
        columns = ", ".join(sorted(encoders))
        raise KeraslsError(f"data.text.encoder (text column(s) {columns}) needs KerasHub and TensorFlow Text: "
                           f"{INSTALL_HINT}; or set data.text.encoder: null for TF-IDF n-grams")
    for column, settings in encoders.items():
        check_folder_sequence_length(settings, column)
