"""This process's task in a TF_CONFIG cluster (`training.distribute: multi_worker`): which worker it is and
whether it is the chief. Plain JSON reading, no TensorFlow: the run folder and the training loop both ask."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from kerasls.errors import KeraslsError


@dataclass(frozen=True)
class ClusterTask:
    """This process's task in TF_CONFIG (`{"cluster": {...}, "task": {"type": ..., "index": ...}}`)."""

    type: str
    index: int
    has_chief: bool

    @property
    def is_chief(self) -> bool:
        """The chief task, or worker 0 when the cluster has none (MultiWorkerMirroredStrategy's rule)."""
        return self.type == "chief" or (self.type == "worker" and self.index == 0 and not self.has_chief)

    @property
    def folder_name(self) -> str:
        return f"{self.type}-{self.index}"


TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}\' (index 1 on host2)')


def cluster_task() -> ClusterTask:
    """The task of this process in the TF_CONFIG environment variable (required by `distribute: multi_worker`)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        raise KeraslsError(f"training.distribute=multi_worker needs the TF_CONFIG environment variable, e.g. "
                           f"{TF_CONFIG_EXAMPLE}")
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, index = str(task["type"]), int(task["index"])
        known = 0 <= index < len(cluster[task_type])
    except (ValueError, KeyError, TypeError) as error:
        raise KeraslsError(f"TF_CONFIG is not valid ({type(error).__name__}: {error}); expected e.g. "
                           f"{TF_CONFIG_EXAMPLE}. Received: {raw}") from None
    if not known:
        raise KeraslsError(f"TF_CONFIG: task {task_type} {index} is not in the cluster. Received: {raw}")
    return ClusterTask(task_type, index, has_chief=bool(cluster.get("chief")))
