"""Make a tiny KerasHub BERT preset folder from a table's text column: an offline encoder for tests and plumbing runs.

    python scripts/make_tiny_encoder.py DATA.csv TEXT_COLUMN OUT_FOLDER [--label COLUMN --epochs 5] [--seed 42]

The word-piece vocabulary is the column's most frequent lowercased words plus single characters (with their
`##` continuations), so every text tokenizes; the backbone is a BERT of `--layers` layers of width `--hidden`.
With `--label`, a `keras_hub.models.BertTextClassifier` over the backbone is first trained on the column's
labels for `--epochs` epochs, so the saved backbone carries what it learnt (a stand-in for pretrained weights);
without, the weights are the random initialisation. The folder holds what `backbone.save_to_preset` and
`tokenizer.save_to_preset` write, which `data.text.encoder.preset` takes. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import re
import string
from collections import Counter
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def word_piece_vocabulary(texts, max_words=2000) -> list[str]:
    """Special tokens, the most frequent lowercased words, then every character alone and as a `##` piece."""
    counts = Counter(word for text in texts for word in re.findall(r"\w+", str(text).lower()))
    characters = list(string.ascii_lowercase + string.digits)
    words = [word for word, _ in counts.most_common(max_words) if word not in characters]
    return [*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters), *words]


def make_tiny_preset(folder, texts, labels=None, *, epochs=5, learning_rate=3e-3, layers=2, hidden=32, heads=2,
                     max_sequence_length=64,
                     seed=42, max_words=2000):
    """Write a tiny BERT preset to `folder` (see the module docstring); returns the folder."""
    import keras
    import keras_hub
    import numpy as np

    keras.utils.set_random_seed(seed)
    vocabulary = word_piece_vocabulary(texts, max_words)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=layers, num_heads=heads,
                                             hidden_dim=hidden, intermediate_dim=2 * hidden,
                                             max_sequence_length=max_sequence_length)
    if labels is not None:
        classes = sorted(set(labels))
        preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer,
                                                                       sequence_length=max_sequence_length)
        classifier = keras_hub.models.BertTextClassifier(backbone, num_classes=len(classes), preprocessor=preprocessor)
        classifier.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
        order = np.random.default_rng(seed).permutation(len(texts))  # fit on numpy ignores shuffle (KerasHub)
        x = np.asarray([str(texts[i]) for i in order], dtype=object)
        y = np.asarray([classes.index(labels[i]) for i in order])
        history = classifier.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        print(f"pretrained on {len(x)} texts: accuracy {history.history['accuracy'][-1]:.3f} in the last epoch")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    return folder


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up lines
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("text_column")
    parser.add_argument("out")
    parser.add_argument("--label", default=None, help="train the backbone on this column's classes first")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--positions", type=int, default=128, help="max_sequence_length (default 128: the default "
                        "data.text.encoder.sequence_length fits)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    table = pd.read_csv(args.data, dtype=str, keep_default_na=False)
    labels = table[args.label].tolist() if args.label else None
    make_tiny_preset(args.out, table[args.text_column].tolist(), labels, epochs=args.epochs, layers=args.layers,
                     hidden=args.hidden, seed=args.seed, max_sequence_length=args.positions)
    print(f"preset: {args.out}")


if __name__ == "__main__":
    main()
