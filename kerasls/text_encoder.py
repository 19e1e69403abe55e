"""`TextEncoder`: a pretrained KerasHub encoder for one text column, its tokenizer in the data path and the export.

Two halves of one KerasHub preset, loaded the way KerasHub users know:
- the tokenizer and packer, `keras_hub.models.TextClassifierPreprocessor.from_preset(preset, sequence_length=L)`:
  raw strings -> `token_ids`, `padding_mask` (and `segment_ids` for BERT-style models), [N, L] each. It runs once
  over a table held in memory (the token ids are kept, as the TF-IDF rows are), per chunk when streaming, and
  inside the exported graph, so serving takes the raw text (with `import tensorflow_text` for its ops);
- the backbone, `keras_hub.models.Backbone.from_preset(preset)`, called on those inputs inside the model. Its
  features are the backbone's `pooled_output` where it has one (BERT, ALBERT, FNet), else the hidden state of the
  first token (the [CLS] / <s> token that DeBERTa's and RoBERTa's classifiers read, at `start_token_index`).

`trainable: false` freezes the backbone; `lora_rank: r` calls `backbone.enable_lora(r)`, which freezes it and
adds rank-r adapters to the attention's query and value projections (their biases stay trainable, as KerasHub
leaves them). `freeze()` / `unfreeze()` switch between head-only training and that configured state, for the
freeze-then-fine-tune phases (`model.freeze_backbone`). Texts longer than `sequence_length` tokens are truncated
by the packer (`tokenize` counts them for the run summary).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasls.encoder_settings import INSTALL_HINT, EncoderSettings, sequence_length_error
from kerasls.errors import KeraslsError, first_line
from kerasls.keras_internals import nested_layers, set_own_trainable


def _keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise KeraslsError(f"data.text.encoder needs KerasHub and TensorFlow Text: {INSTALL_HINT}") from None
    return keras_hub


def download_failed(error: BaseException) -> bool:
    """Whether KerasHub failed to fetch a preset (no network, a name the hub does not serve) rather than to use it."""
    text = f"{type(error).__name__} {error}"
    return any(sign in text for sign in ("ConnectionError", "HTTPSConnectionPool", "NameResolution", "URLError",
                                         "Max retries", "401", "403", "404", "Temporary failure in name resolution"))


def download_error(settings: EncoderSettings, column: str, error: BaseException) -> KeraslsError:
    return KeraslsError(f"data.text.encoder.preset={settings.preset!r} (column {column!r}): KerasHub could not "
                        f"download it ({first_line(error)}); it downloads a preset once and caches it, so run once "
                        "with network, or offline give a local preset folder (backbone.save_to_preset(folder) and "
                        "tokenizer.save_to_preset(folder))")


def load_text_preprocessor(settings: EncoderSettings, column: str):
    """The preset's `TextClassifierPreprocessor` packing to `settings.sequence_length` tokens."""
    keras_hub = _keras_hub()
    try:
        return keras_hub.models.TextClassifierPreprocessor.from_preset(
            settings.preset, sequence_length=settings.sequence_length)
    except Exception as error:  # noqa: BLE001 - KerasHub and its downloaders raise many kinds; one line names it
        if download_failed(error):
            raise download_error(settings, column, error) from None
        if not isinstance(error, (ValueError, FileNotFoundError, OSError)):
            raise
        raise KeraslsError(f"data.text.encoder.preset={settings.preset!r} (column {column!r}): KerasHub cannot load "
                           f"it as a text classifier's preprocessor ({first_line(error)}); use a text-classifier "
                           "preset such as bert_small_en_uncased, or a folder saved with save_to_preset") from None


class TextEncoder(keras.layers.Layer):
    """The tokenizer and packer of one text column: a layer of `TabularPreprocessor`, so it is in the export."""

    def __init__(self, settings: EncoderSettings, column: str, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.settings, self.column = settings, column
        self.packer = load_text_preprocessor(settings, column)
        probe = self.packer(tf.constant(["a"]))
        self.input_keys = sorted(probe)
        self.input_dtypes = {key: probe[key].dtype for key in self.input_keys}
        self.no_word_ids = sorted(no_word_token_ids(self.packer.tokenizer))

    @property
    def sequence_length(self) -> int:
        return self.settings.sequence_length

    def call(self, strings):
        """Raw strings [N] -> {token_ids, padding_mask, ...} [N, sequence_length] each."""
        packed = self.packer(strings)
        return {key: packed[key] for key in self.input_keys}

    def tokenize(self, strings: np.ndarray, batch_size=4096) -> tuple[dict, int]:
        """`call` over a column of numpy strings in chunks, traced once: ({key: numpy array [N, L]}, the number
        of texts that were truncated to `sequence_length` tokens)."""
        special = int(np.count_nonzero(self.real_tokens(self.packer(tf.constant([""])))))  # [CLS], [SEP], ...
        capacity = self.sequence_length - special

        def packed_and_truncated(batch):
            lengths = self.packer.tokenizer(batch).row_lengths()
            return self.call(batch), tf.reduce_sum(tf.cast(lengths > capacity, tf.int64))

        function = tf.function(packed_and_truncated, input_signature=[tf.TensorSpec([None], tf.string)],
                               autograph=False)
        parts, truncated = [], 0
        for start in range(0, max(len(strings), 1), batch_size):
            tokens, count = function(tf.constant(np.asarray(strings[start:start + batch_size], dtype=object),
                                                 tf.string))
            parts.append(tokens)
            truncated += int(count)
        return {key: np.concatenate([part[key].numpy() for part in parts]) for key in self.input_keys}, truncated

    def real_tokens(self, packed: dict):
        """Which positions hold a token, not padding: the packer's `padding_mask`, or for packers without one
        (FNet, ESM) the token ids that are not the tokenizer's padding id."""
        if "padding_mask" in packed:
            return packed["padding_mask"]
        return packed["token_ids"] != getattr(self.packer.tokenizer, "pad_token_id", 0)

    def known_words(self, packed: dict):
        """bool [N]: the row holds a token that is a word piece of the vocabulary, not padding, a special token
        ([CLS], [SEP], ...) or the unknown token (emoji and scripts outside the vocabulary become [UNK])."""
        ids = packed["token_ids"]
        word = tf.cast(self.real_tokens(packed), tf.bool)
        for token_id in self.no_word_ids:
            word &= ids != tf.cast(token_id, ids.dtype)
        return tf.reduce_any(word, axis=-1)

    def keras_inputs(self, name: str) -> dict:
        """One `keras.Input` per packed key, named `<name>_<key>` ([N, L] integers or booleans)."""
        return {key: keras.Input(shape=(self.sequence_length,), dtype=self.input_dtypes[key].name,
                                 name=f"{name}_{key}") for key in self.input_keys}


def no_word_token_ids(tokenizer) -> set:
    """The ids of a KerasHub tokenizer's special tokens and of its unknown token (by its attribute, or the usual
    spellings when the vocabulary has them)."""
    ids = {int(i) for i in tokenizer.special_token_ids if i is not None}
    for token in (getattr(tokenizer, "oov_token", None), getattr(tokenizer, "unk_piece", None), "[UNK]", "<unk>"):
        if token is None:
            continue
        try:
            token_id = tokenizer.token_to_id(token)
        except (KeyError, ValueError, AttributeError, IndexError):
            continue
        if token_id is not None and tokenizer.id_to_token(int(token_id)) == token:
            ids.add(int(token_id))
    return ids


class EncoderBackbone:
    """The backbone of one text column's preset inside a model: its features, and freezing for the phases."""

    def __init__(self, settings: EncoderSettings, column: str):
        keras_hub = _keras_hub()
        self.settings, self.column = settings, column
        try:
            backbone = keras_hub.models.Backbone.from_preset(settings.preset)
        except Exception as error:  # noqa: BLE001 - as in load_text_preprocessor
            if download_failed(error):
                raise download_error(settings, column, error) from None
            if not isinstance(error, (ValueError, FileNotFoundError, OSError)):
                raise
            raise KeraslsError(f"data.text.encoder.preset={settings.preset!r} (column {column!r}): KerasHub cannot "
                               f"load its backbone ({first_line(error)})") from None
        positions = getattr(backbone, "max_sequence_length", None)
        if isinstance(positions, int) and settings.sequence_length > positions:
            raise sequence_length_error(settings, column, positions)
        self.backbone = backbone
        if settings.lora_rank:
            backbone.enable_lora(settings.lora_rank)
        elif not settings.trainable:
            self.freeze()
        self._configured = trainable_flags(backbone)

    def features(self, inputs: dict):
        """[N, hidden]: `pooled_output` where the backbone has one, else the first token's hidden state."""
        outputs = self.backbone({key: inputs[key] for key in self.backbone.input})
        if isinstance(outputs, dict) and "pooled_output" in outputs:
            return outputs["pooled_output"]
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        return sequence[:, getattr(self.backbone, "start_token_index", 0), :]

    def freeze(self) -> None:
        """Train only what follows the encoder (the first phase of `model.freeze_backbone`). Every variable's flag
        is cleared too: `backbone.trainable = False` leaves the LoRA layers' variables flagged trainable, and a
        model around the backbone reads the variables' flags (measured, Keras 3.15)."""
        self.backbone.trainable = False
        for variable in self.backbone.weights:
            variable.trainable = False

    def unfreeze(self) -> None:
        """Back to the configured encoder: all weights, the LoRA adapters only, or none (`trainable: false`)."""
        restore_trainable_flags(self.backbone, self._configured)


def trainable_flags(model) -> tuple[list, list]:
    """(each layer's `trainable`, each variable's `trainable`) of `model`, in a fixed order."""
    layers = [model, *nested_layers(model)]
    return [(layer, layer.trainable) for layer in layers], [(variable, variable.trainable)
                                                            for variable in model.weights]


def restore_trainable_flags(model, flags) -> None:
    """Set the flags `trainable_flags` recorded: layers first (setting a layer's flag sets its variables'), then
    the variables (a LoRA layer is trainable while its frozen kernel is not)."""
    layer_flags, variable_flags = flags
    model.trainable = True
    for layer, trainable in layer_flags:
        set_own_trainable(layer, trainable)
    for variable, trainable in variable_flags:
        variable.trainable = trainable
