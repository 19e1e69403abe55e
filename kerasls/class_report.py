"""The report's class-level sections: the classes with their rows and recall, the confusion matrix where it can be
read, and the most confused pairs of classes with an example row each.

With many classes (Banking77's 77) a matrix of 77 × 77 cells leaves 4-pixel cells and cut labels; the pairs table
names what the matrix would show. The matrix is embedded up to `MATRIX_UP_TO` classes and always written to
`plots/confusion.png`.
"""

import html

import numpy as np
from matplotlib.figure import Figure

from kerasls.report_parts import image, percent, save

ANNOTATE_CONFUSION_UP_TO = 20  # classes; above this the count annotations are dropped
MATRIX_UP_TO = 30  # classes; above this the matrix is not embedded in report.html (its cells are too small)
LIST_CLASSES_UP_TO = 12  # classes; above this the class table is folded (a <details> element)
CONFUSED_PAIRS = 10


def _plain_text(name, limit=24):
    """A class name safe for matplotlib text: `$` would start mathtext; long names are shortened."""
    name = str(name)
    name = name if len(name) <= limit else name[: limit - 1] + "…"
    return name.replace("$", r"\$")


def confusion_matrix(labels, predicted, num_classes):
    """Counts C[i, j] = number of rows with true class i and predicted class j."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise ValueError(f"`labels` and `predicted` must be 1-D of the same length. "
                         f"Received shapes: {labels.shape} and {predicted.shape}")
    for name, values in (("labels", labels), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"`{name}` must be in [0, {num_classes - 1}]. "
                             f"Received values in [{values.min()}, {values.max()}]")
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def plot_confusion(labels, predicted, classes, path):
    """Confusion-matrix heat map (rows true, columns predicted), coloured by share of the true class and
    annotated with counts up to ANNOTATE_CONFUSION_UP_TO classes. Returns the path."""
    classes = [str(name) for name in classes]
    num_classes = len(classes)
    counts = confusion_matrix(labels, predicted, num_classes)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)
    side = min(4.0 + 0.28 * num_classes, 18.0)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    font_size = 9 if num_classes <= ANNOTATE_CONFUSION_UP_TO else 7 if num_classes <= 50 else 6
    names = [_plain_text(name) for name in classes]
    axes.set_xticks(range(num_classes), names, rotation=90, fontsize=font_size)
    axes.set_yticks(range(num_classes), names, fontsize=font_size)
    annotate = num_classes <= ANNOTATE_CONFUSION_UP_TO
    axes.set(xlabel="predicted class", ylabel="true class",
             title="Confusion matrix" + (" (numbers: counts)" if annotate else f" ({len(labels)} rows)"))
    if annotate:
        for i in range(num_classes):
            for j in range(num_classes):
                axes.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font_size,
                          color="white" if shares[i, j] > 0.5 else ("#999999" if counts[i, j] == 0 else "black"))
    return save(figure, path)


def classes_section(classes, labels, predicted) -> str:
    """The classes with their rows among the evaluated ones and their recall (folded when there are many)."""
    counts = np.bincount(labels, minlength=len(classes))
    right = np.bincount(labels[labels == predicted], minlength=len(classes))
    rows = "".join(f"<tr><td><code>{html.escape(str(name))}</code></td><td>{counts[k]}</td>"
                   f"<td>{percent(right[k] / counts[k]) if counts[k] else '—'}</td></tr>"
                   for k, name in enumerate(classes))
    table = ("<table><thead><tr><th>class</th><th>rows</th><th>recall</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>")
    if len(classes) <= LIST_CLASSES_UP_TO:
        return f'<p class="note">{len(classes)} classes:</p>{table}'
    return f"<details><summary>{len(classes)} classes (rows and recall of each)</summary>{table}</details>"


def confused_pairs(labels, predicted, classes, row_ids=None, top=CONFUSED_PAIRS) -> list:
    """The `top` (true class, predicted class) pairs with the most rows, most first (ties: class order), each with
    its count, its share of the true class and an example: the first such row, by `row_ids` or by its line in
    predictions.csv (line 2 is the first row)."""
    counts = confusion_matrix(labels, predicted, len(classes))
    np.fill_diagonal(counts, 0)
    order = np.argsort(-counts, axis=None, kind="stable")[:top]
    totals = np.bincount(labels, minlength=len(classes))
    pairs = []
    for flat in order:
        true, guess = divmod(int(flat), len(classes))
        if counts[true, guess] == 0:
            break
        first = int(np.flatnonzero((labels == true) & (predicted == guess))[0])
        example = str(row_ids[first]) if row_ids is not None else f"predictions.csv line {first + 2}"
        pairs.append({"true": str(classes[true]), "predicted": str(classes[guess]),
                      "rows": int(counts[true, guess]), "share": float(counts[true, guess] / totals[true]),
                      "example": example})
    return pairs


def confusion_section(labels, predicted, classes, png_path, row_ids=None) -> str:
    """The matrix (embedded up to MATRIX_UP_TO classes), then the most confused pairs."""
    png = plot_confusion(labels, predicted, classes, png_path)
    parts = ["<h2>Confusion matrix</h2>"]
    if len(classes) <= MATRIX_UP_TO:
        parts.append(image(png.read_bytes(), "confusion matrix"))
    else:
        parts.append(f'<p class="note">{len(classes)} classes: the matrix is too dense to read here (it is in '
                     "<code>plots/confusion.png</code>); the pairs below are its largest cells off the "
                     "diagonal.</p>")
    pairs = confused_pairs(labels, predicted, classes, row_ids)
    if pairs:
        rows = "".join(f"<tr><td><code>{html.escape(p['true'])}</code></td><td><code>{html.escape(p['predicted'])}"
                       f"</code></td><td>{p['rows']}</td><td>{percent(p['share'])}</td>"
                       f"<td>{html.escape(p['example'])}</td></tr>" for p in pairs)
        parts.append("<p>Most confused pairs (rows of the true class predicted as the other):</p>"
                     "<table><thead><tr><th>true class</th><th>predicted</th><th>rows</th><th>share of the true "
                     f"class</th><th>example</th></tr></thead><tbody>{rows}</tbody></table>")
    return "\n".join(parts)
