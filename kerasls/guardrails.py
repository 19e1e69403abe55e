"""Warnings about target settings that compound, printed once per run on standard error.

They do not stop a run: each combination can be intended, but each changes the targets in a way that is easy to
miss in a config file.
"""

import sys


def target_warnings(targets_config, augment_config=None) -> list[str]:
    epsilon = targets_config.label_smoothing
    soft = targets_config.soft_labels
    found = []
    if soft is not None and epsilon > 0:
        if soft.source == "teacher":
            found.append(
                f"label_smoothing={epsilon:g} with a teacher: ε smooths the hard part of the distillation target "
                "only; the teacher's probabilities are used as they are"
            )
        else:
            found.append(
                f"label_smoothing={epsilon:g} on top of soft {soft.source}: every target q becomes "
                f"q(1-{epsilon:g}) + {epsilon:g}/K, flattening distributions that are already soft; set "
                "targets.label_smoothing=0 to train on them as they are"
            )
    if augment_config is not None and epsilon > 0:
        mixing = [name for key, name in (("mixup", "MixUp"), ("cutmix", "CutMix"))
                  if getattr(augment_config, key).probability > 0]
        if mixing:
            found.append(
                f"{' and '.join(mixing)} on top of label_smoothing={epsilon:g}: mixed "
                "targets are already soft and are smoothed again by the loss; a smaller ε is usually enough"
            )
    return found


def warn(targets_config, augment_config=None, stream=None) -> list[str]:
    messages = target_warnings(targets_config, augment_config)
    for message in messages:
        print(f"warning: {message}", file=stream or sys.stderr)
    return messages
